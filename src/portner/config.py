"""Settings, read once from flags and environment, and passed as plain values to adapters.

Only the composition root (`bootstrap`) and the CLI read this module; the domain and services
never do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Where `portner serve` runs the simulated locks' radio bridge in development by default.
LOCAL_BRIDGE_URL = "http://127.0.0.1:8001"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("PORTNER_DATA_DIR", "portner-data")))
    database_url: str | None = field(default_factory=lambda: os.environ.get("PORTNER_DB"))
    municipality_id: str = field(default_factory=lambda: os.environ.get("PORTNER_MUNICIPALITY", "kommune"))
    timezone: str = field(default_factory=lambda: os.environ.get("PORTNER_TIMEZONE", "Europe/Oslo"))
    # Where finished visits go: a folder by default, or a FHIR server base URL.
    encounter_outbox: str | None = field(default_factory=lambda: os.environ.get("PORTNER_FHIR_OUTBOX"))

    # --- the server (`portner serve`) ---
    # "development" allows the built-in sign-in and demo data; "production" refuses both and
    # needs an OpenID provider.
    mode: str = field(default_factory=lambda: os.environ.get("PORTNER_MODE", "development"))
    # Where people reach the server (used for sign-in redirects and links sent by SMS).
    public_url: str = field(default_factory=lambda: os.environ.get("PORTNER_PUBLIC_URL", "http://127.0.0.1:8000"))
    oidc_issuer: str | None = field(default_factory=lambda: os.environ.get("PORTNER_OIDC_ISSUER"))
    oidc_client_id: str | None = field(default_factory=lambda: os.environ.get("PORTNER_OIDC_CLIENT_ID"))
    oidc_client_secret: str | None = field(default_factory=lambda: os.environ.get("PORTNER_OIDC_CLIENT_SECRET"))
    # The audience API access tokens must carry (the resource indicator at the provider).
    api_audience: str = field(default_factory=lambda: os.environ.get("PORTNER_API_AUDIENCE", "urn:portner:api"))
    # How SMS leave: "outbox" (kept in the database, shown in development), an http(s) URL of an
    # SMS gateway, or smtp://host:port for an e-mail-to-SMS gateway.
    sms_gateway: str = field(default_factory=lambda: os.environ.get("PORTNER_SMS_GATEWAY", "outbox"))
    # Where the nurse app finds the lock radio bridge (the demo's stand-in for Bluetooth), when
    # one is named (PORTNER_BRIDGE_URL; "" for none); else the mode decides (see bridge_url).
    named_bridge_url: str | None = field(default_factory=lambda: os.environ.get("PORTNER_BRIDGE_URL"))

    # Which adapter drives keypad and remote lock commands (see portner.locks.registry), and where
    # it connects: "simulated" (in-process), "zigbee2mqtt" (an MQTT broker URL such as
    # mqtt://127.0.0.1:1883), "matter" (a Matter server's ws:// URL), "nuki" or "webhook" (https).
    lock_backend: str = field(default_factory=lambda: os.environ.get("PORTNER_LOCKS", "simulated"))
    lock_backend_url: str | None = field(default_factory=lambda: os.environ.get("PORTNER_LOCKS_URL"))
    # Each backend's own options, from PORTNER_LOCK_<BACKEND>_<OPTION> (for example
    # PORTNER_LOCK_NUKI_TOKEN, PORTNER_LOCK_WEBHOOK_SECRET, PORTNER_LOCK_ZIGBEE2MQTT_BASE_TOPIC);
    # PORTNER_LOCK_<BACKEND>_URL overrides PORTNER_LOCKS_URL for that backend.
    lock_backend_options: dict[str, dict[str, str]] = field(default_factory=lambda: backend_options(os.environ))

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @property
    def bridge_url(self) -> str:
        """The lock radio bridge the apps are told of and their CSP lets them reach: the one
        named, else in development the local one `portner serve` runs, and in production none
        (the bridge would let anyone on the network talk to every lock)."""
        if self.named_bridge_url is not None:
            return self.named_bridge_url
        return LOCAL_BRIDGE_URL if self.development else ""

    @property
    def db_url(self) -> str:
        """The database URL: PORTNER_DB, or a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'portner.sqlite').as_posix()}"


BACKEND_OPTION_PREFIX = "PORTNER_LOCK_"


def backend_options(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """PORTNER_LOCK_<BACKEND>_<OPTION>=value -> {backend: {option: value}}, names lower-cased."""
    found: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(BACKEND_OPTION_PREFIX):
            continue
        backend, _, option = name[len(BACKEND_OPTION_PREFIX):].partition("_")
        if backend and option:
            found.setdefault(backend.lower(), {})[option.lower()] = value
    return found
