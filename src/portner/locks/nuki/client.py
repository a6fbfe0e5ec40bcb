"""The Nuki Web API over HTTP: one authenticated client, and its answers mapped to the port's.

HTTP: 401/403 -> NOT_AUTHORISED, 429 and 5xx -> TEMPORARY, 400 -> BAD_CODE/BAD_SCHEDULE,
409 -> DUPLICATE_CODE (the caller reconciles), connection failures -> OFFLINE, read timeouts ->
TIMED_OUT. A failed request raises `Refused` carrying the CommandResult to answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from portner.locks.nuki.wire import iso
from portner.locks.port import CommandResult, Refusal, refused, timed_out


class Refused(Exception):
    """An HTTP answer that ends a command; carries the port's answer."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.detail)
        self.result = result


class NotFound(Refused):
    """404: the resource is not (or no longer) in this account."""


class NukiApi:
    """The account's HTTP client (Bearer token); opened by the backend's start()."""

    def __init__(self, url: str, token: str, *, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self._token = token
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url, transport=self._transport, timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        if self._client is None:
            raise RuntimeError("the nuki backend is not started")
        try:
            response = await self._client.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise Refused(timed_out(f"Nuki Web API did not answer ({type(exc).__name__})")) from exc
        except httpx.TransportError as exc:
            raise Refused(refused(Refusal.OFFLINE, f"Nuki Web API unreachable "
                                                   f"({type(exc).__name__})")) from exc
        if response.status_code < 300:
            return response.json() if response.content else None
        raise classify(response, method)

    async def read_log(self, address: str, since: datetime | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 50}
        if since is not None:
            params["fromDate"] = iso(since)
        entries = await self.request("GET", f"/smartlock/{address}/log", params=params)
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def classify(response: httpx.Response, method: str) -> Refused:
    status = response.status_code
    try:
        detail = str(response.json().get("detailMessage", ""))
    except (ValueError, AttributeError):
        detail = ""
    where = f"Nuki Web API {method} answered {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return Refused(refused(Refusal.NOT_AUTHORISED, where))
    if status == 404:
        return NotFound(refused(Refusal.NOT_AUTHORISED, where + " (not in this account)"))
    if status == 409:
        return Refused(refused(Refusal.DUPLICATE_CODE, where))
    if status == 400:
        lowered = detail.lower()
        if "date" in lowered or "time" in lowered or "week" in lowered:
            return Refused(refused(Refusal.BAD_SCHEDULE, where))
        return Refused(refused(Refusal.BAD_CODE, where))
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        where += f" (retry after {retry_after} s)"
    # 429, 5xx and statuses we do not know: transient, retry with backoff.
    return Refused(refused(Refusal.TEMPORARY, where))
