"""The nurse app's upload queue goes out in requests within the server's limits (run in Node)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.web.test_phone_api import DOOR_JS

RUNNER = """
import * as door from "./door.mjs";
const entries = JSON.parse(process.argv[2]);
console.log(JSON.stringify(door.uploadBatches(entries).map((b) => ({
  ids: b.ids, locks: b.uploads.map((u) => u.lock_id), sizes: b.uploads.map((u) => u.events.length),
  first: b.uploads.map((u) => u.events[0]), events: b.events }))));
"""


def batches(tmp_path: Path, entries: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    shutil.copyfile(DOOR_JS, tmp_path / "door.mjs")
    (tmp_path / "run.mjs").write_text(RUNNER)
    done = subprocess.run([node, "run.mjs", json.dumps(entries)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_many_entries_are_split_within_the_server_limits(tmp_path: Path) -> None:
    entries = [{"id": i, "lock_id": f"l-{i % 70}", "events": list(range(30))} for i in range(120)]
    out = batches(tmp_path, entries)
    assert sorted(i for b in out for i in b["ids"]) == list(range(120))  # each entry forgotten once
    for b in out:
        assert len(b["locks"]) <= 50 and b["events"] <= 2000
        per_lock: dict[str, int] = {}
        for lock, size in zip(b["locks"], b["sizes"], strict=True):
            per_lock[lock] = per_lock.get(lock, 0) + size
        assert max(per_lock.values()) <= 500


def test_a_long_log_goes_in_consecutive_slices_and_is_forgotten_with_the_last(tmp_path: Path) -> None:
    out = batches(tmp_path, [{"id": 7, "lock_id": "l-1", "events": list(range(1200))}])
    assert [b["sizes"] for b in out] == [[500], [500], [200]]
    assert [b["first"] for b in out] == [[0], [500], [1000]]
    assert [b["ids"] for b in out] == [[], [], [7]]
