"""`portner serve`: the API, the web apps and (in development) the lock radio bridge.

In development mode with no database configured, the server keeps a demo municipality in
`<data dir>/serve`: made on first start for today's date in Europe/Oslo and remade when the day
has changed, with a development account for each kind of user. In production mode nothing is
made: the database and the OpenID provider are the operator's.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from portner.bootstrap import utcnow
from portner.config import Settings
from portner.demo.accounts import create_dev_accounts
from portner.demo.day import find_fixtures
from portner.demo.site import MUNICIPALITY, load_demo_site
from portner.services.checkpoints import write_checkpoint
from portner.services.ids import IdSource
from portner.storage.db import normalise_url, open_database

DAY_MARKER = ".portner-serve-day"


@dataclass(frozen=True, slots=True)
class DemoServe:
    settings: Settings
    made: bool
    day: date


def prepare_demo(settings: Settings, *, seed: int = 2026, day: date | None = None,
                 fixtures: Path | None = None) -> DemoServe:
    """Point the settings at the demo municipality, making it when missing or from another day."""
    zone = ZoneInfo(settings.timezone)
    today = day or utcnow().astimezone(zone).date()
    folder = settings.data_dir / "serve"
    marker = folder / DAY_MARKER
    demo_settings = replace(settings, data_dir=folder, municipality_id=MUNICIPALITY, database_url=None)
    if marker.exists() and marker.read_text().strip() == today.isoformat():
        return DemoServe(demo_settings, False, today)
    if folder.exists():
        if not marker.exists() and any(folder.iterdir()):
            raise SystemExit(f"portner serve: {folder} exists and is not made by portner serve; "
                             "choose another --data-dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, mode=0o700)
    engine = open_database(demo_settings.db_url)
    try:
        now = utcnow()
        ids = IdSource(seed)  # the same seed gives the same ids: development accounts stay put
        load_demo_site(engine, folder, seed=seed, day=today, ids=ids, now=now,
                       fixtures=fixtures or find_fixtures(None))
        create_dev_accounts(engine, MUNICIPALITY, day_start=datetime.combine(today, time(0), zone),
                            now=now, ids=ids)
        write_checkpoint(engine, folder, now=now)
    finally:
        engine.dispose()
    marker.write_text(today.isoformat() + "\n")
    return DemoServe(demo_settings, True, today)


# Paths that carry a secret: a one-time visitor's link token. Access logs show them cut.
_SECRET_PATH = re.compile(r"(/visit/)[^/?\s]+")


class RedactSecretPaths(logging.Filter):
    """Keeps one-time link tokens out of uvicorn's access log (its args hold the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_PATH.sub(r"\1…", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def server_options(*, access_log: bool = True, log_level: str = "info") -> dict[str, object]:
    """uvicorn settings shared by `portner serve` and the benchmark (which measures them).

    The fastest event loop and HTTP parser uvicorn finds ("auto": uvloop and httptools when
    installed, else asyncio and h11); the access log, with one-time link tokens cut, unless off.
    """
    return {"loop": "auto", "http": "auto", "log_level": log_level, "access_log": access_log,
            "proxy_headers": False, "server_header": False, "lifespan": "on"}


def run(settings: Settings, *, host: str, port: int, bridge_port: int | None, workers: int = 1,
        announce: Callable[[], None] = lambda: None) -> None:
    """Serve until interrupted. The bridge (development only) listens on its own port.
    `announce` says what is served, once the server could be made (a refusal says only why).

    With `workers` > 1 (production, PostgreSQL) the API runs in that many processes, one per core
    being the usual choice: a request's Python work holds one core, and PostgreSQL keeps the
    processes consistent. Development mode keeps one process: its simulated locks, bridge and
    live event stream live in the server's memory.
    """
    import uvicorn

    logging.getLogger("uvicorn.access").addFilter(RedactSecretPaths())

    from portner.web.app import StartupError, create_app

    if workers > 1:
        if settings.development or not settings.database_url or \
                normalise_url(settings.database_url).get_backend_name() != "postgresql":
            raise StartupError(
                f"--workers {workers} needs production mode and PostgreSQL "
                "(PORTNER_MODE=production, PORTNER_DB=postgresql://...); SQLite and development "
                "mode serve from one process: --workers 1"
            )
        # Made once before the workers start, so that they only read what a first start writes.
        create_app(settings).state.portner.engine.dispose()
        announce()
        # The workers are spawned processes: they get the settings through their environment
        # (readable by this user only, where PORTNER_OIDC_CLIENT_SECRET already is).
        os.environ[WORKER_SETTINGS] = settings_to_text(settings)
        uvicorn.run("portner.web.serve:_worker_app", factory=True, workers=workers, host=host,
                    port=port, **server_options())  # type: ignore[arg-type]
        return
    app = create_app(settings)
    # Both ports are taken before anything is served: a bridge that could not listen left the
    # API's port open and answering nothing, and the process deaf to Ctrl-C.
    bound: list[list[socket.socket]] = []
    try:
        bound.append(listening(host, port, "--port"))
        servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, **server_options()))]  # type: ignore[arg-type]
        if bridge_port is not None:
            from portner.web.bridge import create_bridge_app

            bound.append(listening(host, bridge_port, "--bridge-port"))
            bridge = create_bridge_app(app.state.portner)
            servers.append(uvicorn.Server(uvicorn.Config(bridge, host=host, port=bridge_port,
                                                         log_level="warning", server_header=False)))
        log = logging.getLogger("uvicorn.error")
        for socks in bound:  # (uvicorn says where it listens only for the sockets it binds)
            log.info("Listening on %s", ", ".join(_address(sock) for sock in socks))
        announce()

        async def serve_all() -> None:
            await asyncio.gather(*(s.serve(sockets=socks) for s, socks in zip(servers, bound, strict=True)))

        asyncio.run(serve_all())
    finally:
        for socks in bound:
            for sock in socks:
                sock.close()


def listening(host: str, port: int, option: str) -> list[socket.socket]:
    """Sockets bound to host:port, one per address the host names, as asyncio's create_server
    binds them (an IPv6 one for IPv6 only), for uvicorn to listen on; or StartupError naming the
    port and `option`, the flag that chooses another."""
    from portner.web.app import StartupError

    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--host)") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in socks:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen on {host}:{port}: the port is taken (another server "
                               f"there?); stop it, or choose another port with {option}") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return socks


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


WORKER_SETTINGS = "PORTNER_SERVE_WORKER_SETTINGS"


def settings_to_text(settings: Settings) -> str:
    """The settings as JSON text, for worker processes (every field is text, a path, a mapping of
    text, or None)."""
    def plain(value: object) -> object:
        return value if value is None or isinstance(value, dict) else str(value)

    return json.dumps({f.name: plain(getattr(settings, f.name)) for f in fields(settings)})


def settings_from_text(text: str) -> Settings:
    values = json.loads(text)
    return Settings(**{**values, "data_dir": Path(values["data_dir"])})


def _worker_app() -> object:
    """One worker's app, over the settings its parent put in the environment."""
    from portner.web.app import create_app

    logging.getLogger("uvicorn.access").addFilter(RedactSecretPaths())
    return create_app(settings_from_text(os.environ[WORKER_SETTINGS]))
