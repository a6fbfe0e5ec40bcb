"""A real OpenID provider for the tests: `oidc-provider` from npm, run by Node on loopback.

- `start_provider(...)` starts one (tests/node/oidc-provider.mjs) and returns a `RunningProvider`
  with `.issuer`, `.stop()`, the registered web client and integration clients, and helpers that
  go through the provider as a person or an integration would (`sign_in`, `user_tokens`,
  `client_token`). `issuer=`, `signing_jwks=` and `clock_offset_seconds=` make a twin of another
  provider (same keys, a claimed or different issuer, a clock behind) for tokens that must fail.
- `start_oidc_provider` (session fixture): that factory, stopping every provider at the end.
- `oidc_provider` (session fixture): one provider with Portner's web client (redirect to the
  TestClient's http://127.0.0.1:8000), two integration clients and two people.

Node or tests/node/node_modules missing: skipped with the reason, failed under CI=true.
Integration clients get a fresh RSA key here; only the public half goes to the provider.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import authlib.deprecate  # noqa: F401  (its import adds a warnings filter; ours below must follow it)
import httpx
import pytest
from joserfc.jwk import RSAKey

from portner.config import Settings
from tests.conftest import _unavailable

with warnings.catch_warnings():
    # Authlib 1.9 warns that it falls back to httpx instead of its httpx2 fork.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT = NODE_DIR / "oidc-provider.mjs"
READY_TIMEOUT_SECONDS = 30.0
API_AUDIENCE = "urn:portner:api"
OTHER_AUDIENCE = "urn:other-service:api"  # a second resource server: tokens not meant for us
TEST_CLIENT_URL = "http://127.0.0.1:8000"  # fastapi TestClient's base URL in tests/web
DEFAULT_USERS = {"nurse-login": "Nora Testsykepleier", "relative-login": "Per Testpårørende"}
WEB_CLIENT_ID = "portner-web"


def node_unavailable() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "Node.js is not installed (the OpenID provider for the tests runs on node)"
    if not (NODE_DIR / "node_modules" / "oidc-provider").is_dir():
        return f"oidc-provider is not installed: run `npm ci` in {NODE_DIR}"
    return None


@dataclass(frozen=True)
class WebClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class IntegrationClient:
    """A system that signs in with client credentials and a signed client assertion."""

    client_id: str
    scope: str
    key: RSAKey = field(repr=False)

    @classmethod
    def generate(cls, client_id: str, scope: Iterable[str]) -> IntegrationClient:
        key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig",
                                                    "alg": "RS256"})
        return cls(client_id, " ".join(scope), key)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}


@dataclass
class RunningProvider:
    issuer: str
    url: str  # where it listens: the issuer's URL, except for a twin that claims another issuer
    process: subprocess.Popen[bytes]
    log_path: Path
    web_client: WebClient
    integration_clients: dict[str, IntegrationClient]
    signing_jwks: dict[str, Any] = field(repr=False)
    _metadata: dict[str, Any] | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            answer = httpx.get(self.url + "/.well-known/openid-configuration", timeout=10)
            answer.raise_for_status()
            self._metadata = answer.json()
        return self._metadata

    @property
    def token_endpoint(self) -> str:
        """The token endpoint as the provider names it (under its issuer)."""
        return str(self.metadata["token_endpoint"])

    def settings_for(self, settings: Settings, **overrides: Any) -> Settings:
        """Settings that make a Portner server use this provider (and, in production, which
        needs one, an SMS gateway: port 1 on loopback, where nothing listens)."""
        if overrides.get("mode") == "production":
            overrides.setdefault("sms_gateway", "smtp://127.0.0.1:1")
        return replace(settings, oidc_issuer=self.issuer, oidc_client_id=self.web_client.client_id,
                       oidc_client_secret=self.web_client.client_secret, api_audience=API_AUDIENCE,
                       **overrides)

    def client_token(self, client_id: str, *, scope: str | None = None,
                     resource: str = API_AUDIENCE) -> dict[str, Any]:
        """Client credentials with a private_key_jwt assertion, made by Authlib."""
        client = self.integration_clients[client_id]
        # Posted where the provider listens; the assertion's audience is the endpoint as named
        # under the issuer (the same URL except for a twin).
        endpoint = self.url + urlsplit(self.token_endpoint).path
        with OAuth2Client(client.client_id, client.key, token_endpoint_auth_method="private_key_jwt",
                          scope=scope or client.scope, timeout=10) as oauth:
            oauth.register_client_auth_method(PrivateKeyJWT(self.token_endpoint))
            return dict(oauth.fetch_token(endpoint, grant_type="client_credentials", resource=resource))

    def user_tokens(self, login: str) -> dict[str, Any]:
        """A person's tokens for the web client (code flow with PKCE, by Authlib), outside Portner.

        What a client of the API holding a person's access token would have: the access token is
        a JWT for the API audience with the person's subject.
        """
        web = self.web_client
        meta = self.metadata
        endpoint = self.url + urlsplit(str(meta["token_endpoint"])).path
        with OAuth2Client(web.client_id, web.client_secret, scope="openid profile",
                          redirect_uri=web.redirect_uris[0], code_challenge_method="S256",
                          timeout=10) as oauth:
            verifier = secrets.token_urlsafe(48)
            url, _state = oauth.create_authorization_url(
                self.url + urlsplit(str(meta["authorization_endpoint"])).path, code_verifier=verifier,
                nonce=secrets.token_urlsafe(16), resource=API_AUDIENCE)
            back = self.sign_in(url, login)
            return dict(oauth.fetch_token(endpoint, authorization_response=back, code_verifier=verifier))

    def sign_in(self, authorize_url: str, login: str, *, http: httpx.Client | None = None) -> str:
        """Go through the provider's login form as `login`; returns the redirect back to the client.

        Follows the provider's own redirects and submits its form (like a browser without one);
        stops at the first redirect that leaves the provider.
        """
        own = http is None
        http = http or httpx.Client(timeout=10)
        try:
            url, method, data = authorize_url, "GET", None
            for _ in range(10):
                answer = http.request(method, url, data=data, follow_redirects=False)
                if answer.is_redirect:
                    target = urljoin(url, answer.headers["location"])
                    if not target.startswith(self.url + "/"):
                        return target
                    url, method, data = target, "GET", None
                    continue
                form = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', answer.text)
                if answer.status_code != 200 or form is None:
                    raise AssertionError(f"the provider answered {answer.status_code}: {answer.text[:300]}")
                url, method = urljoin(url, unescape(form.group(1))), "POST"
                data = {"prompt": "login", "login": login, "password": "any"}
            raise AssertionError("the provider kept redirecting")
        finally:
            if own:
                http.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rsa_signing_jwks() -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})
    return {"keys": [key.as_dict(private=True)]}


def start_provider(
    workdir: Path,
    *,
    redirect_uris: Iterable[str] = (f"{TEST_CLIENT_URL}/auth/callback",),
    integration_clients: Iterable[IntegrationClient] = (),
    users: Mapping[str, str] | None = None,
    issuer: str | None = None,
    signing_jwks: dict[str, Any] | None = None,
    clock_offset_seconds: int = 0,
    ttl: Mapping[str, int] | None = None,
    web_client: WebClient | None = None,
    port: int = 0,
) -> RunningProvider:
    """Start oidc-provider on loopback (a free port unless given) and wait (30 s at most)."""
    reason = node_unavailable()
    if reason is not None:
        _unavailable(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    web = web_client or WebClient(WEB_CLIENT_ID, secrets.token_urlsafe(32), tuple(redirect_uris))
    clients = {c.client_id: c for c in integration_clients}
    jwks = signing_jwks or _rsa_signing_jwks()
    config = {
        "issuer": issuer,
        "web_clients": [{"client_id": web.client_id, "client_secret": web.client_secret,
                         "redirect_uris": list(web.redirect_uris)}],
        "integration_clients": [{"client_id": c.client_id, "scope": c.scope, "jwks": c.public_jwks()}
                                for c in clients.values()],
        "resources": {API_AUDIENCE: " ".join(sorted({s for c in clients.values() for s in c.scope.split()})),
                      OTHER_AUDIENCE: " ".join(sorted({s for c in clients.values() for s in c.scope.split()}))},
        "users": dict(DEFAULT_USERS if users is None else users),
        "signing_jwks": jwks,
        "clock_offset_seconds": clock_offset_seconds,
        "ttl": dict(ttl or {}),
    }
    config_path = workdir / f"oidc-{secrets.token_hex(4)}.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds private keys
    with os.fdopen(fd, "w") as fh:
        json.dump({k: v for k, v in config.items() if v is not None}, fh)
    log_path = config_path.with_suffix(".log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(["node", str(SCRIPT), str(config_path), str(port)], cwd=NODE_DIR,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ready = _wait_ready(process, log_path)
    return RunningProvider(ready["issuer"], ready["url"], process, log_path, web, clients, jwks)


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, str]:
    """The provider's ready line (issuer, url); the log tail if it dies or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith('{"issuer"'):
                return {k: str(v) for k, v in json.loads(line).items()}
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the OpenID provider did not start (exit {process.poll()}):\n{tail}")
        time.sleep(0.05)


ProviderFactory = Callable[..., RunningProvider]


@pytest.fixture(scope="session")
def start_oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderFactory]:
    """`start_oidc_provider(**kwargs)`: like `start_provider`, stopped at the end of the session."""
    started: list[RunningProvider] = []
    root = tmp_path_factory.mktemp("oidc")

    def start(**kwargs: Any) -> RunningProvider:
        provider = start_provider(root, **kwargs)
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()


CARE_RECORD = "care-record"
LOCK_GATEWAY = "lock-gateway"


@pytest.fixture(scope="session")
def oidc_provider(start_oidc_provider: ProviderFactory) -> RunningProvider:
    """The provider most tests share: Portner's web client and two integrations."""
    from portner.domain.access import SCOPE_DIRECTORY_READ, SCOPE_EVENTS_UPLOAD, SCOPE_FHIR_IMPORT

    return start_oidc_provider(integration_clients=[
        IntegrationClient.generate(CARE_RECORD, [SCOPE_FHIR_IMPORT, SCOPE_DIRECTORY_READ]),
        IntegrationClient.generate(LOCK_GATEWAY, [SCOPE_EVENTS_UPLOAD]),
    ])
