"""Keypad codes as a service, and the reconciler that keeps every lock in step with the plan.

- codes.py: issue, reveal once, change the window, count uses, revoke (caller's transaction)
- vault.py: AES-GCM at rest and a keyed MAC, keys derived from the municipality's secrets
- reconcile.py: `Reconciler.run_once(now)`, one pass over the locks; sweeps and onboarding
- delivery.py, readings.py, plan.py, budget.py: what answers and reads mean, what is due, the
  radio budget and backoff
"""

from portner.services.keypad.codes import (
    AlreadyDelivered,
    KeypadCodeError,
    change_window,
    issue_code,
    record_use,
    reveal_once,
    revoke_code,
)
from portner.services.keypad.model import Enforcement, Intent, State
from portner.services.keypad.reconcile import PassReport, Reconciler, ReconcilerSettings
from portner.services.keypad.vault import CodeDecryptionError, KeypadKeys

__all__ = [
    "AlreadyDelivered", "CodeDecryptionError", "Enforcement", "Intent", "KeypadCodeError",
    "KeypadKeys", "PassReport", "Reconciler", "ReconcilerSettings", "State", "change_window",
    "issue_code", "record_use", "reveal_once", "revoke_code",
]
