"""Fixtures for the server's tests: the demo municipality, and clients signed in as its users.

- `demo_template` (session): the demo municipality for 2026-12-03 prepared once.
- `demo_settings`: a private copy of it for one test (its SQLite file and keys).
- `clock`: a RunningClock starting 2026-12-03 08:00 Europe/Oslo (the demo day's morning).
- `portner_app`: create_app over demo_settings with that clock (adapters via `app_adapters`).
- `client_for(subject)`: a TestClient signed in through the development sign-in as a demo account
  (demo-nurse-1..3, demo-operator, demo-admin, demo-relative, demo-resident), with the session's
  CSRF token sent as X-CSRF-Token on every request. `client_for(None)` is not signed in.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from portner.config import Settings
from portner.web.app import create_app
from portner.web.serve import prepare_demo
from tests.support.clock import RunningClock

DEMO_DAY = date(2026, 12, 3)
OSLO = ZoneInfo("Europe/Oslo")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("demo-template")
    prepared = prepare_demo(Settings(data_dir=root), day=DEMO_DAY)
    return prepared.settings


def copy_demo(template: Settings, target: Path) -> Settings:
    shutil.copytree(template.data_dir, target)
    return replace(template, data_dir=target)


@pytest.fixture
def demo_settings(demo_template: Settings, tmp_path: Path) -> Settings:
    return copy_demo(demo_template, tmp_path / "serve")


@pytest.fixture
def clock() -> RunningClock:
    return RunningClock(datetime.combine(DEMO_DAY, time(8, 0), OSLO))


@pytest.fixture
def app_adapters() -> dict[str, Any]:
    """Override to inject fakes for ports (e.g. {"sms": RecordingGateway()})."""
    return {}


@pytest.fixture
def portner_app(demo_settings: Settings, clock: RunningClock, app_adapters: dict[str, Any]) -> Iterator[FastAPI]:
    app = create_app(demo_settings, clock=clock, adapters=app_adapters)
    yield app
    # Its clients' lifespans dispose of the pool, but a test may open connections after the
    # first of them ends, or use the app with no client: closed here, not left to the collector
    # (a psycopg connection collected open is a ResourceWarning, an error in this suite).
    app.state.portner.engine.dispose()


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def sign_in(client: TestClient, subject: str) -> None:
    page = client.get("/signin")
    match = CSRF_META.search(page.text)
    assert match, "the sign-in page carries a CSRF token"
    answer = client.post(
        "/signin/dev", data={"subject": subject, "csrf": match.group(1), "next": "/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and "error" not in answer.headers["location"], answer.headers
    # The session is new after sign-in: read its token from any page.
    landing = client.get("/signin")
    client.headers["X-CSRF-Token"] = CSRF_META.search(landing.text).group(1)  # type: ignore[union-attr]


@pytest.fixture
def client_for(portner_app: FastAPI) -> Iterator[Callable[[str | None], TestClient]]:
    opened: list[TestClient] = []

    def make(subject: str | None) -> TestClient:
        client = TestClient(portner_app, base_url="http://127.0.0.1:8000")
        client.__enter__()
        opened.append(client)
        if subject is not None:
            sign_in(client, subject)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
