"""`portner serve` with several worker processes: what each worker is started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from portner.config import Settings
from portner.web import serve
from portner.web.app import StartupError


def test_a_worker_gets_exactly_the_settings_its_parent_serves_with(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url="postgresql+psycopg://db/x",
                        municipality_id="oslo", mode="production", oidc_issuer="https://id.example",
                        oidc_client_id="portner", oidc_client_secret=None)
    again = serve.settings_from_text(serve.settings_to_text(settings))
    assert again == settings
    assert isinstance(again.data_dir, Path)


def test_several_workers_need_production_and_postgresql(tmp_path: Path) -> None:
    # Development keeps its simulated locks and live stream in one process's memory.
    with pytest.raises(StartupError, match="production mode and PostgreSQL"):
        serve.run(Settings(data_dir=tmp_path, mode="development"), host="127.0.0.1", port=0,
                  bridge_port=None, workers=2)
    with pytest.raises(StartupError, match="production mode and PostgreSQL"):
        serve.run(Settings(data_dir=tmp_path, mode="production", database_url=None), host="127.0.0.1",
                  port=0, bridge_port=None, workers=2)


def test_the_server_options_are_uvicorns_fastest_with_the_access_log_on_by_default() -> None:
    import uvicorn

    options = serve.server_options()
    assert (options["loop"], options["http"], options["access_log"]) == ("auto", "auto", True)
    assert serve.server_options(access_log=False)["access_log"] is False
    uvicorn.Config(app=lambda *a: None, **options)  # every option is one uvicorn knows
