"""End-to-end fixtures: a real server on loopback and headless Chromium driven by Playwright.

- `live`: the demo municipality served by uvicorn in a thread on free ports: the platform
  (`live.url`) and the lock radio bridge (`live.bridge_url`), with a RunningClock from the demo
  day's morning. `live.portner` is the runtime (engine, secrets, clock), `live.engine` the database.
  Per test; `live_server(adapters=..., **settings)` starts another with injected ports or settings.
- `browser` (session) and `page` (a fresh context per test) in Debian's /usr/bin/chromium; the
  Python Playwright package drives it and never downloads a browser.
- `sign_in(page, live, subject)`: the development sign-in as a demo account.
- `axe_check(page)`: runs axe-core (tests/node/node_modules/axe-core) on the page and fails on any
  serious or critical WCAG 2.1 A/AA violation, listing rule ids and elements.

Chromium, Node or axe-core missing: the tests are skipped with the reason, except under CI=true.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine

from portner.config import Settings
from portner.web.app import create_app
from portner.web.state import Portner
from tests.conftest import _unavailable
from tests.support.clock import RunningClock
from tests.web.conftest import DEMO_DAY, OSLO, copy_demo, demo_template  # noqa: F401  (fixture)

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).resolve().parent.parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ThreadServer:
    """uvicorn in a daemon thread; started and stopped by the fixture."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on", server_header=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class LiveServer:
    url: str
    bridge_url: str
    settings: Settings
    portner: Portner
    clock: RunningClock

    @property
    def engine(self) -> Engine:
        return self.portner.engine


@pytest.fixture
def live_server(demo_template: Settings, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:  # noqa: F811
    started: list[_ThreadServer] = []
    count = 0

    def start(adapters: dict[str, Any] | None = None, **overrides: Any) -> LiveServer:
        nonlocal count
        count += 1
        from datetime import datetime
        from datetime import time as dtime

        port, bridge_port = free_port(), free_port()
        settings = copy_demo(demo_template, tmp_path / f"live-{count}")
        settings = replace(settings, public_url=f"http://127.0.0.1:{port}",
                           named_bridge_url=f"http://127.0.0.1:{bridge_port}", **overrides)
        clock = RunningClock(datetime.combine(DEMO_DAY, dtime(8, 0), OSLO))
        app = create_app(settings, clock=clock, adapters=adapters)
        servers = [_ThreadServer(app, port)]
        try:
            from portner.web.bridge import create_bridge_app
        except ImportError:
            create_bridge_app = None  # type: ignore[assignment]
        if create_bridge_app is not None:
            servers.append(_ThreadServer(create_bridge_app(app.state.portner), bridge_port))
        for s in servers:
            s.start()
            started.append(s)
        return LiveServer(settings.public_url, settings.bridge_url, settings, app.state.portner, clock)

    yield start
    for s in reversed(started):
        s.stop()


@pytest.fixture
def live(live_server: Callable[..., LiveServer]) -> LiveServer:
    return live_server()


@pytest.fixture(scope="package")  # closed after tests/e2e: its running event loop would break later async tests
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable("Debian's chromium is not installed (/usr/bin/chromium); dev.sh installs it as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(locale="nb-NO", timezone_id="Europe/Oslo")
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def sign_in(page: Any, live: LiveServer, subject: str, *, next_path: str = "/") -> None:
    """The development sign-in, as a person would do it."""
    page.goto(f"{live.url}/signin?next={next_path}")
    page.select_option("#subject", subject)
    page.locator("form[action=\"/signin/dev\"] button[type=submit]").click()
    page.wait_for_load_state("networkidle")


@functools.lru_cache(maxsize=1)
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8") + "\n;undefined"


def axe_check(page: Any) -> None:
    """Fail on any serious or critical WCAG 2.1 A/AA violation axe-core finds on the page."""
    if not AXE.exists():
        _unavailable(f"axe-core is not installed ({AXE}); dev.sh installs tests/node")
    # Evaluated through the driver, not added as a <script>: the pages' Content-Security-Policy
    # (scripts only from the server) rightly refuses inline scripts.
    page.evaluate(_axe_source())
    result = page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
    )
    bad = [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]
    details = "; ".join(
        f"{v['id']} ({v['impact']}): " + ", ".join(str(n["target"]) for n in v["nodes"][:3]) for v in bad
    )
    assert not bad, f"axe-core on {page.url}: {details}"
