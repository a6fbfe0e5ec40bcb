"""`portner serve`: the API, the web apps and (in development) the lock radio bridge.

In development mode with no database configured, the server keeps a demo municipality in
`<data dir>/serve`: made on first start for today's date in Europe/Oslo and remade when the day
has changed, with a development account for each kind of user. In production mode nothing is
made: the database and the OpenID provider are the operator's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from dataclasses import dataclass, replace
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
from portner.storage.db import open_database

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


def run(settings: Settings, *, host: str, port: int, bridge_port: int | None) -> None:
    """Serve until interrupted. The bridge (development only) listens on its own port."""
    import uvicorn

    logging.getLogger("uvicorn.access").addFilter(RedactSecretPaths())

    from portner.web.app import create_app

    app = create_app(settings)
    servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                             proxy_headers=False, server_header=False))]
    if bridge_port is not None:
        from portner.web.bridge import create_bridge_app

        bridge = create_bridge_app(app.state.portner)
        servers.append(uvicorn.Server(uvicorn.Config(bridge, host=host, port=bridge_port,
                                                     log_level="warning", server_header=False)))

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(serve_all())
