"""The demo's own files: Portner's installation registry, and a care plan changed mid-day."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from portner.domain.model import DoorKind, Visit
from portner.services.importing import DoorSpec


def read_installations(path: Path) -> dict[str, list[DoorSpec]]:
    """Read the installation registry (portner-installations/1): door paths by patient id."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[DoorSpec]] = {}
    for patient_ref, home in data["homes"].items():
        doors = sorted(home["doors"], key=lambda d: d["position"])
        out[patient_ref] = [
            DoorSpec(
                door_id=d["door_id"],
                lock_id=d["lock"]["lock_id"],
                kind=DoorKind(d["kind"]),
                model=d["lock"].get("model", ""),
                backend=d["lock"].get("backend", "simulated"),
            )
            for d in doors
        ]
    return out


def write_plan_cancelling(plans_dir: Path, plan_key: str, visit: Visit, zone: ZoneInfo) -> Path | None:
    """Write the next version of the plan holding `visit`, with that activity marked cancelled."""
    start_local = visit.planned_start.astimezone(zone)
    for path in sorted(plans_dir.glob("*.json")):
        plan = json.loads(path.read_text(encoding="utf-8"))
        keys = {f"{i.get('system', '')}|{i.get('value', '')}".strip() for i in plan.get("identifier", [])}
        if plan.get("resourceType") != "CarePlan" or plan_key not in keys:
            continue
        changed = False
        for act in plan.get("activity", []):
            detail = act.get("detail", {})
            bounds = detail.get("scheduledTiming", {}).get("repeat", {}).get("boundsPeriod", {})
            if "start" in bounds and datetime.fromisoformat(bounds["start"]).astimezone(zone) == start_local:
                detail["status"] = "cancelled"
                changed = True
        if not changed:
            return None
        meta = plan.setdefault("meta", {})
        version = str(meta.get("versionId", "1"))
        meta["versionId"] = str(int(version) + 1) if version.isdigit() else "2"
        out = plans_dir.parent / "updates" / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(plan, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        return out
    return None
