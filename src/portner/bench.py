"""`portner bench`: figures measured on this machine, each beside its baseline from the same run.

- plan-to-credential throughput (parse, expand, store, sign) against the raw Ed25519 signing rate,
  on SQLite and PostgreSQL (target: at least 0.25 of the raw rate);
- one door verification at the lock against two raw Ed25519 verifications (target: at most 1.5x);
- credential size against a JWT carrying the same claims (target: <= 256 bytes and <= half);
- peak memory of an Oslo-size day (~50,000 visits) in a fresh process (target: under 500 MB).

Timings are wall-clock medians of repeated runs; the machine is shared and noisy, so every figure is
a ratio to a baseline measured moments before on the same machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BENCH_DAY = date(2026, 12, 3)


def _rate(fn: Any, n: int, repeats: int = 5) -> float:
    """Return operations per second: the median over `repeats` runs of `n` calls."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def raw_sign_rate(n: int = 3000) -> float:
    key = Ed25519PrivateKey.generate()
    msg = os.urandom(160)
    return _rate(lambda: key.sign(msg), n)


def raw_verify_seconds(n: int = 3000) -> float:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    msg = os.urandom(160)
    sig = key.sign(msg)
    return 1.0 / _rate(lambda: pub.verify(sig, msg), n)


# -- door verification ---------------------------------------------------------------------------
def _credential_fixture(doors: int = 3) -> dict[str, Any]:
    from portner.credentials import DeviceKey, IssuerKey, issue_credential

    issuer = IssuerKey.generate()
    device = DeviceKey.generate()
    nbf = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
    door_ids = [f"d-{i:06d}" for i in range(1, doors + 1)]
    blob = issue_credential(
        issuer,
        credential_id=os.urandom(16),
        subject="stf-3f9c0a1b2c4d5e6f",
        device_public_key=device.public_key_bytes,
        door_ids=door_ids,
        not_before=nbf,
        not_after=nbf + timedelta(hours=1, minutes=45),
        issued_at=nbf - timedelta(hours=1),
    )
    return {"issuer": issuer, "device": device, "blob": blob, "doors": door_ids, "nbf": nbf}


def door_verification(n: int = 2000) -> dict[str, float]:
    from portner.credentials import RevocationState, verify_presentation

    fx = _credential_fixture()
    challenge = os.urandom(32)
    proof = fx["device"].sign_proof(challenge, fx["doors"][-1], "unlock")
    issuers = {fx["issuer"].kid: fx["issuer"].public}
    revocations = RevocationState()
    now = fx["nbf"] + timedelta(minutes=20)

    def verify() -> None:
        verdict = verify_presentation(
            fx["blob"], proof, challenge=challenge, door_id=fx["doors"][-1], action="unlock",
            now=now, issuers=issuers, revocations=revocations,
        )
        if not verdict.allowed:
            raise RuntimeError(f"benchmark credential was refused: {verdict.reason}")

    baseline = 2 * raw_verify_seconds(n)
    ours = 1.0 / _rate(verify, n)
    return {"ours_us": ours * 1e6, "baseline_us": baseline * 1e6, "ratio": ours / baseline}


# -- size ----------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def credential_size() -> dict[str, float]:
    from portner.credentials import decode_credential

    fx = _credential_fixture(doors=3)
    claims = decode_credential(fx["blob"])
    # The same claims as a compact JWS (RFC 7519/7515) with an RFC 7800 cnf JWK, signed EdDSA.
    header = {"alg": "EdDSA", "kid": _b64(fx["issuer"].kid), "typ": "JWT"}
    payload = {
        "sub": claims.subject,
        "doors": list(claims.door_ids),
        "nbf": int(claims.not_before.timestamp()),
        "exp": int(claims.not_after.timestamp()),
        "iat": int(claims.issued_at.timestamp()),
        "jti": _b64(claims.credential_id),
        "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64(fx["device"].public_key_bytes)}},
    }
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = Ed25519PrivateKey.generate().sign(signing_input.encode())
    jwt = signing_input + "." + _b64(signature)
    return {"ours": len(fx["blob"]), "jwt": len(jwt), "ratio": len(fx["blob"]) / len(jwt)}


# -- the pipeline --------------------------------------------------------------------------------
def _pg_url(base: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def pipeline(url: str, residents: int, staff: int, workdir: Path) -> dict[str, float]:
    """Time parse + expand + store + sign for one synthetic day; return visits per second."""
    from portner.credentials import DeviceKey
    from portner.demo.synthetic import generate_municipality
    from portner.domain.model import Municipality, MunicipalityId
    from portner.fhir import read_sources
    from portner.services.devices import register_device
    from portner.services.ids import IdSource
    from portner.services.importing import import_sources
    from portner.services.issuing import issue_for_shift
    from portner.services.keys import load_or_create_secrets
    from portner.storage.db import open_database
    from portner.storage.repository import Repository

    zone = ZoneInfo("Europe/Oslo")
    site_dir = workdir / f"site-{residents}"
    if not site_dir.exists():
        generate_municipality(site_dir, seed=7, day=BENCH_DAY, residents=residents, staff=staff,
                              timezone="Europe/Oslo", bad_records=False)
    site = _site_paths(site_dir)
    engine = open_database(url)
    ids = IdSource(7)
    now = datetime(2026, 12, 3, 5, 0, tzinfo=zone)
    m = Municipality(id=MunicipalityId("bench"), name="Bench", accept_synthetic_ids=True)
    with engine.begin() as conn:
        repo = Repository(conn)
        repo.add_municipality(m)
        secrets = load_or_create_secrets(conn, workdir / f"keys-{uuid.uuid4().hex[:6]}", "bench", now=now)
    day0 = datetime(2026, 12, 3, 0, 0, tzinfo=zone)
    horizon = {"horizon_start": day0 - timedelta(days=1), "horizon_end": day0 + timedelta(days=2)}
    # Residents, staff and their phones are master data registered before the day; the figure
    # is for what happens every morning: plans in, credentials out.
    master = read_sources(site[:2], timezone=m.timezone, accept_synthetic_ids=True, **horizon)
    import_sources(engine, m, master, now=now, ids=ids)
    with engine.connect() as conn:
        actors = Repository(conn).actors("bench")
    devices = [
        register_device(engine, a.id, DeviceKey.generate().public_key_bytes, now=now, ids=ids, by="bench").id
        for a in actors
    ]
    start = time.perf_counter()
    sources = read_sources(site[2:], timezone=m.timezone, accept_synthetic_ids=True, **horizon)
    t_read = time.perf_counter() - start
    report = import_sources(engine, m, sources, now=now, ids=ids)
    t_import = time.perf_counter() - start - t_read
    t1 = time.perf_counter()
    issued = issue_for_shift(engine, secrets.issuer, devices, window_start=day0,
                             window_end=day0 + timedelta(days=1, hours=4), now=now, ids=ids)
    t_issue = time.perf_counter() - t1
    engine.dispose()
    total = t_read + t_import + t_issue
    return {
        "visits": report.visits_added,
        "credentials": len(issued),
        "seconds": total,
        "visits_per_s": report.visits_added / total if total else 0.0,
        "read_s": t_read,
        "store_s": t_import,
        "sign_s": t_issue,
    }


def _site_paths(site_dir: Path) -> list[Path]:
    """Return the patients, practitioners and plans folders, in that order."""
    return [site_dir / "patients", site_dir / "practitioners", site_dir / "plans"]


def _drop_schema(base: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    from portner.storage.db import normalise_url

    engine = create_engine(normalise_url(base))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _pg_pipeline(base: str, residents: int, staff: int, workdir: Path) -> dict[str, float]:
    from sqlalchemy import create_engine, text

    from portner.storage.db import normalise_url

    url, schema = _pg_url(base)
    engine = create_engine(normalise_url(base))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    try:
        return pipeline(url, residents, staff, workdir)
    finally:
        _drop_schema(base, schema)


def oslo_memory(visits: int, workdir: Path) -> dict[str, float]:
    """Run an Oslo-size pipeline in a fresh process and read its peak resident memory."""
    residents = max(50, int(visits / 2.4))
    staff = max(10, residents // 8)
    code = (
        "import sys, json, resource; from pathlib import Path; from portner.bench import pipeline;"
        f"r = pipeline('sqlite:///{(workdir / 'oslo.sqlite').as_posix()}', {residents}, {staff}, Path({str(workdir)!r}));"
        "r['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"Oslo-size run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_bench(args: argparse.Namespace) -> int:
    """Run every measurement and print figure, baseline, ratio and target."""
    # With --json, stdout carries only the JSON; progress goes to stderr.
    console = Console(stderr=bool(args.json))
    quick = bool(args.quick)
    n = 300 if quick else 3000
    visits = 400 if quick else args.visits
    residents = max(20, int(visits / 2.4))
    staff = max(5, residents // 8)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="portner-bench-") as tmp:
        workdir = Path(tmp)
        console.print("Measuring raw Ed25519 rates...")
        sign_rate = raw_sign_rate(n)
        results["raw_sign_per_s"] = sign_rate
        console.print("Measuring the plan-to-credential pipeline on SQLite...")
        results["sqlite"] = pipeline(f"sqlite:///{(workdir / 'bench.sqlite').as_posix()}", residents, staff, workdir)
        if not args.no_pg:
            console.print("... and on PostgreSQL...")
            try:
                results["postgresql"] = _pg_pipeline(args.pg or DEFAULT_PG, residents, staff, workdir)
            except Exception as exc:  # noqa: BLE001 - report, do not hide, an unreachable server
                results["postgresql"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        console.print("Measuring door verification and credential size...")
        results["verify"] = door_verification(n)
        results["size"] = credential_size()
        console.print(f"Measuring peak memory of an Oslo-size day ({args.oslo_visits if not quick else 2000} visits)...")
        results["oslo"] = oslo_memory(2000 if quick else args.oslo_visits, workdir)
    results["targets"] = verdicts(results)
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        _print(results, console)
    # The measurement itself succeeded; --check turns a missed target into a failing exit code.
    missed = [t["figure"] for t in results["targets"] if t["met"] is False]
    if missed and not args.json:
        console.print(f"Targets missed: {', '.join(missed)}")
    return 1 if (args.check and missed) else 0


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure beside its baseline, ratio and target, and whether the target is met."""
    raw = r["raw_sign_per_s"]
    rows: list[dict[str, Any]] = []
    for name in ("sqlite", "postgresql"):
        p = r.get(name)
        if not p:
            continue
        if "error" in p:
            rows.append({"figure": f"pipeline on {name}", "ours": p["error"], "baseline": "",
                         "ratio": None, "target": ">= 0.25", "met": None})
            continue
        ratio = p["visits_per_s"] / raw
        rows.append({
            "figure": f"plan-to-credential, {name} ({p['visits']} visits)",
            "ours": f"{p['visits_per_s']:.0f} visits/s",
            "baseline": f"{raw:.0f} Ed25519 signs/s",
            "ratio": round(ratio, 3), "target": ">= 0.25", "met": ratio >= 0.25,
        })
    v = r["verify"]
    rows.append({"figure": "door verification", "ours": f"{v['ours_us']:.0f} us",
                 "baseline": f"{v['baseline_us']:.0f} us (2 raw verifies)",
                 "ratio": round(v["ratio"], 3), "target": "<= 1.5", "met": v["ratio"] <= 1.5})
    z = r["size"]
    rows.append({"figure": "credential size (3 doors)", "ours": f"{z['ours']} B",
                 "baseline": f"{z['jwt']} B (JWT)", "ratio": round(z["ratio"], 3),
                 "target": "<= 256 B and <= 0.5", "met": z["ours"] <= 256 and z["ratio"] <= 0.5})
    o = r["oslo"]
    rows.append({"figure": f"peak memory, {o['visits']} visits", "ours": f"{o['peak_mb']:.0f} MB",
                 "baseline": "", "ratio": None, "target": "< 500 MB", "met": o["peak_mb"] < 500})
    return rows


def _print(r: dict[str, Any], console: Console) -> None:
    table = Table(title="Portner benchmark (this machine, this run)")
    for col in ("figure", "ours", "baseline", "ratio", "target", "met"):
        table.add_column(col, overflow="fold")
    for row in verdicts(r):
        met = "n/a" if row["met"] is None else ("yes" if row["met"] else "NO")
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
        table.add_row(row["figure"], row["ours"], row["baseline"], ratio, row["target"], met)
    console.print(table)
