"""What every request handler needs, made once at start-up by `create_app`.

Handlers get this through `deps.portner(request)`; nothing reads settings or globals directly, so
a test can run several servers side by side in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from portner.config import Settings
from portner.domain.model import Municipality
from portner.services.ids import IdSource
from portner.services.keys import MunicipalitySecrets


@dataclass(slots=True)
class Portner:
    settings: Settings
    engine: Engine
    municipality: Municipality
    secrets: MunicipalitySecrets
    clock: Callable[[], datetime]
    ids: IdSource = field(default_factory=IdSource)
    # Adapters chosen by configuration in one place (app.py); tests swap in fakes that
    # implement the same port.
    adapters: dict[str, Any] = field(default_factory=dict)

    def now(self) -> datetime:
        return self.clock()
