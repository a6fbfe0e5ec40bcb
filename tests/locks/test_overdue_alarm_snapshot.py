"""The fleet pass clears a removal_overdue alarm only on what its own transaction reads."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from portner.services.keypad import reconcile
from tests.locks.test_reconcile_wanted_again import _extend, _late_removal, _open_overdue


@pytest.mark.anyio
async def test_fleet_pass_does_not_clear_the_alarm_of_a_code_revoked_after_its_snapshot(
        sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    site, rec, code_id = await _late_removal(sqlite_engine)
    _extend(site, code_id)  # wanted again, as the snapshot will read it ...
    real = reconcile.read_fleet

    def read_then_revoke(*args: Any, **kwargs: Any) -> Any:
        snap = real(*args, **kwargs)
        site.revoke(code_id)  # ... and revoked by an operator just after the read
        return snap

    monkeypatch.setattr(reconcile, "read_fleet", read_then_revoke)
    await rec.run_once(site.clock())
    # The code is revoked and still on the (offline) lock, its removal late: the alarm stays open.
    assert [a.subject for a in _open_overdue(site)] == [code_id]
