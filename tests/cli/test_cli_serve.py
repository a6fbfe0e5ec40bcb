"""`portner serve` settings: what the apps are told about the lock radio bridge, per mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from portner.cli import main
from portner.config import LOCAL_BRIDGE_URL, Settings
from portner.web import serve
from portner.web.headers import content_security_policy


def served(monkeypatch: pytest.MonkeyPatch, *argv: str) -> Settings:
    """The settings `portner serve ARGV` would serve with (the server itself is not started)."""
    seen: list[Settings] = []

    def capture(settings: Settings, **_: Any) -> None:
        seen.append(settings)

    monkeypatch.setattr(serve, "run", capture)
    assert main(["serve", *argv]) == 0
    (settings,) = seen
    return settings


def production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("PORTNER_OIDC_ISSUER", "https://idp.example.no"), ("PORTNER_OIDC_CLIENT_ID", "portner"),
                        ("PORTNER_OIDC_CLIENT_SECRET", "s"), ("PORTNER_SMS_GATEWAY", "smtp://127.0.0.1:1"),
                        ("PORTNER_PUBLIC_URL", "https://portner.kommune.no")):
        monkeypatch.setenv(name, value)


def test_production_offers_no_radio_bridge_unless_one_is_named(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PORTNER_BRIDGE_URL", raising=False)
    production_settings(monkeypatch)
    production = served(monkeypatch, "--mode", "production", "--data-dir", str(tmp_path))
    assert production.bridge_url == ""
    # So the apps' CSP lets them talk to this server alone.
    assert "connect-src 'self';" in content_security_policy(production.bridge_url)

    development = served(monkeypatch, "--mode", "development", "--no-demo", "--data-dir", str(tmp_path),
                         "--bridge-port", "8123")
    assert development.bridge_url == "http://127.0.0.1:8123"
    assert "connect-src 'self' http://127.0.0.1:8123;" in content_security_policy(development.bridge_url)

    monkeypatch.setenv("PORTNER_BRIDGE_URL", "https://radio.example.no")
    named = served(monkeypatch, "--mode", "production", "--data-dir", str(tmp_path))
    assert named.bridge_url == "https://radio.example.no"


@pytest.mark.parametrize(("setting", "value"), [
    ("PORTNER_OIDC_ISSUER", None), ("PORTNER_OIDC_CLIENT_SECRET", None), ("PORTNER_SMS_GATEWAY", None),
    ("PORTNER_SMS_GATEWAY", ""), ("PORTNER_SMS_GATEWAY", "smtp:/x"), ("PORTNER_API_AUDIENCE", " "),
    ("PORTNER_PUBLIC_URL", "http://portner.kommune.no"), ("PORTNER_PUBLIC_URL", "portner.kommune.no"),
    ("PORTNER_PUBLIC_URL", "https://"), ("PORTNER_PUBLIC_URL", "https://portner.kommune.no/?x=1"),
    ("PORTNER_PUBLIC_URL", "http://127.0.0.1.example.no"), ("PORTNER_PUBLIC_URL", "HTTPS://portner.kommune.no"),
    ("PORTNER_PUBLIC_URL", " https://portner.kommune.no"), ("PORTNER_PUBLIC_URL", "https://portner.kommune.no/ "),
    ("PORTNER_PUBLIC_URL", "https://portner.kommune.no/portner"), ("PORTNER_PUBLIC_URL", "https://u:p@portner.kommune.no"),
    ("PORTNER_PUBLIC_URL", "http://127.0.0.1.example.no"), ("PORTNER_PUBLIC_URL", "http://localhost.evil.example:8000"),
    ("PORTNER_PUBLIC_URL", "http://0.0.0.0:8000"), ("PORTNER_PUBLIC_URL", "ftp://portner.kommune.no"),
    ("PORTNER_PUBLIC_URL", "https://portner.kommune.no/#top"), ("PORTNER_PUBLIC_URL", "//portner.kommune.no"),
])
def test_production_refuses_to_start_without_a_provider_or_a_gateway_and_says_only_why(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        setting: str, value: str | None) -> None:
    production_settings(monkeypatch)
    if value is None:
        monkeypatch.delenv(setting)
    else:
        monkeypatch.setenv(setting, value)
    monkeypatch.setattr(serve, "run", lambda *a, **k: pytest.fail("served"))
    assert main(["serve", "--mode", "production", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert setting in out.err and "Serving on" not in out.out


@pytest.mark.parametrize("public_url", [
    "https://portner.kommune.no", "https://portner.kommune.no/", "http://127.0.0.1:8000", "http://localhost:8000",
    "http://[::1]:8000", "http://127.0.0.2:8000",
])
def test_production_is_served_at_an_https_url_or_over_http_on_loopback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, public_url: str) -> None:
    production_settings(monkeypatch)
    monkeypatch.setenv("PORTNER_PUBLIC_URL", public_url)
    assert served(monkeypatch, "--mode", "production", "--data-dir", str(tmp_path)).public_url == public_url


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_production_needs_its_public_url_named_wherever_it_listens(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str) -> None:
    # Not made from --host and --port as in development: behind a TLS proxy (the usual way, on
    # loopback), http://127.0.0.1:8000 would be the sign-in's redirect and the SMS links' address.
    production_settings(monkeypatch)
    monkeypatch.delenv("PORTNER_PUBLIC_URL", raising=False)
    monkeypatch.setattr(serve, "run", lambda *a, **k: pytest.fail("served"))
    assert main(["serve", "--mode", "production", "--host", host, "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "needs PORTNER_PUBLIC_URL" in out.err and "Serving on" not in out.out


def test_serve_says_what_it_serves_only_once_the_server_is_made(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    production_settings(monkeypatch)
    # A database with no municipality yet (no administrator added): refused, with how to make one.
    monkeypatch.setenv("PORTNER_DB", f"sqlite:///{tmp_path / 'empty.sqlite'}")
    assert main(["serve", "--mode", "production", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "no municipality" in out.err and "portner accounts add --role admin" in out.err
    assert "Serving on" not in out.out
    # More workers than SQLite serves: refused before a word of what would be served.
    assert main(["serve", "--mode", "production", "--workers", "2", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "--workers 1" in out.err and "Serving on" not in out.out


@pytest.mark.parametrize("public_url", [
    pytest.param("https://user:secret@portner.kommune.no", id="userinfo, in every link sent by SMS"),
    pytest.param("http://evil.example\\@127.0.0.1:8000", id="a browser's host is evil.example, Python's 127.0.0.1"),
    pytest.param("https://portner.kommune.no:99999", id="no such port"),
    pytest.param("https://[::1", id="unparsable: a StartupError, not a ValueError's traceback"),
])
def test_production_refuses_a_public_url_whose_links_would_not_lead_here(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], public_url: str) -> None:
    production_settings(monkeypatch)
    monkeypatch.setenv("PORTNER_PUBLIC_URL", public_url)
    monkeypatch.setattr(serve, "run", lambda *a, **k: pytest.fail("served"))
    assert main(["serve", "--mode", "production", "--data-dir", str(tmp_path)]) == 2
    assert "PORTNER_PUBLIC_URL" in capsys.readouterr().err


def test_the_bridge_follows_the_mode_unless_one_is_named_and_an_empty_name_is_none(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PORTNER_BRIDGE_URL", raising=False)
    development = Settings(data_dir=tmp_path, mode="development")
    assert development.named_bridge_url is None and development.bridge_url == LOCAL_BRIDGE_URL
    assert replace(development, mode="production").bridge_url == ""
    assert replace(replace(development, mode="production"), mode="development").bridge_url == LOCAL_BRIDGE_URL
    named = replace(development, named_bridge_url="https://radio.example.no")
    assert replace(named, mode="production").bridge_url == "https://radio.example.no"
    # Set but empty: no bridge, in either mode, and `portner serve` does not put its own in.
    monkeypatch.setenv("PORTNER_BRIDGE_URL", "")
    assert Settings(data_dir=tmp_path, mode="development").bridge_url == ""
    assert served(monkeypatch, "--mode", "development", "--no-demo", "--data-dir", str(tmp_path)).bridge_url == ""
    production_settings(monkeypatch)
    assert served(monkeypatch, "--mode", "production", "--data-dir", str(tmp_path)).bridge_url == ""


def test_production_names_every_missing_setting_at_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("PORTNER_OIDC_ISSUER", "PORTNER_OIDC_CLIENT_ID", "PORTNER_OIDC_CLIENT_SECRET",
                 "PORTNER_SMS_GATEWAY", "PORTNER_PUBLIC_URL", "PORTNER_API_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--mode", "production", "--data-dir", str(tmp_path)]) == 2
    said = capsys.readouterr().err
    for name in ("PORTNER_PUBLIC_URL", "PORTNER_OIDC_ISSUER", "PORTNER_SMS_GATEWAY"):
        assert name in said, said
    # Only what is missing is named: the issuer and its client id are set here.
    monkeypatch.setenv("PORTNER_OIDC_ISSUER", "https://idp.example.no")
    monkeypatch.setenv("PORTNER_OIDC_CLIENT_ID", "portner")
    assert main(["serve", "--mode", "production", "--data-dir", str(tmp_path)]) == 2
    said = capsys.readouterr().err
    assert "also set PORTNER_OIDC_CLIENT_SECRET (" in said and "PORTNER_OIDC_CLIENT_ID and" not in said, said
    assert not (tmp_path / "portner.sqlite").exists()  # refused before anything was made


def test_a_busy_bridge_port_stops_serve_before_it_serves_and_names_the_option(tmp_path: Path) -> None:
    with socket.socket() as api, socket.socket() as busy:
        api.bind(("127.0.0.1", 0))
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        api_port, busy_port = api.getsockname()[1], busy.getsockname()[1]
        api.close()
        try:
            done = subprocess.run(
                [sys.executable, "-c", "import sys; from portner.cli import main; sys.exit(main())", "serve",
                 "--port", str(api_port), "--bridge-port", str(busy_port), "--data-dir", str(tmp_path)],
                capture_output=True, text=True, timeout=120, env={**os.environ, "PORTNER_MODE": "development"})
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"serve kept running with its bridge port taken: {exc.stdout!r} {exc.stderr!r}")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"127.0.0.1:{busy_port}" in done.stderr and "--bridge-port" in done.stderr, done.stderr
    assert "Open http" not in done.stdout  # nothing was said to be served
    with socket.socket() as again:  # and the API's port was let go
        again.bind(("127.0.0.1", api_port))


def test_serve_listens_where_its_host_says_as_asyncio_would(tmp_path: Path) -> None:
    from portner.web.app import StartupError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    socks = serve.listening("127.0.0.1", port, "--port")
    try:
        assert [s.getsockname()[:2] for s in socks] == [("127.0.0.1", port)]
        socks[0].listen()
        # Taken: the refusal names the port and the flag that chooses another.
        with pytest.raises(StartupError, match=rf"127\.0\.0\.1:{port}: the port is taken.*--bridge-port"):
            serve.listening("127.0.0.1", port, "--bridge-port")
    finally:
        for s in socks:
            s.close()
    with pytest.raises(StartupError, match="no-such-host.invalid"):
        serve.listening("no-such-host.invalid", port, "--port")
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    # "::" is IPv6 only, as asyncio's create_server makes it: IPv4 is not served unasked.
    socks = serve.listening("::", 0, "--port")
    try:
        (six,) = socks
        assert six.family == socket.AF_INET6
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        six.close()
