"""Which lock adapter serves which backend name: the one place configuration picks adapters.

Each adapter module exposes `create_backend(config, *, now)`; it is imported only when chosen, so
a deployment that uses one vendor does not load (or need) the others' libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from typing import Final

from portner.domain.errors import PortnerError
from portner.locks.port import BackendConfig, LockBackend

ADAPTERS: Final = {
    "simulated": "portner.locks.keypad_sim",
    "zigbee2mqtt": "portner.locks.zigbee2mqtt",
    "matter": "portner.locks.matter",
    "nuki": "portner.locks.nuki",
    "webhook": "portner.locks.webhook",
}


class UnknownBackend(PortnerError):
    """A lock backend name that no adapter serves."""


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> LockBackend:
    """Return the backend for `config.name`, not yet started."""
    module = ADAPTERS.get(config.name)
    if module is None:
        raise UnknownBackend(
            f"unknown lock backend {config.name!r}; choose one of {', '.join(sorted(ADAPTERS))}"
        )
    return importlib.import_module(module).create_backend(config, now=now)
