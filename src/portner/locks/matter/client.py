"""A small client for the Matter Server WebSocket API (the OHF matter.js server, or the Python one).

Wire format (matter-js/matterjs-server `docs/websockets_api.md`): on connect the server sends
`server_info` with `schema_version` and `min_supported_schema_version`; requests are
`{"message_id", "command", "args"}`, answered by `{"message_id", "result"}` or
`{"message_id", "error_code", "details"}`; after `start_listening` events arrive as
`{"event", "data"}`. Node ids may exceed 2**53, which Python's json keeps exact.

Every failure leaves this module as one of three errors, so callers never see `websockets`:
`ServerUnavailable` (no connection), `RequestTimedOut` (no answer in time) and `ServerError` (the
server answered with an error code). The client reconnects on the next request after a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from portner.domain.errors import PortnerError
from portner.locks.matter.cluster import status_in

LOGGER = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, and SetCredential frames carry the PIN (base64 is not
# protection): its logger for our connections never goes below INFO, whatever the root level.
WIRE_LOGGER = logging.getLogger("portner.locks.matter.wire")
WIRE_LOGGER.setLevel(logging.INFO)

# The oldest schema whose commands we use (read_attribute, device_command, node_event) is 11,
# the Python server's last; the matter.js server speaks 11 to 14.
MIN_SCHEMA: Final = 11
MAX_SCHEMA: Final = 14

NODE_NOT_READY: Final = 3  # error codes shared by both servers (websockets_api.md, "Error Codes")
NODE_NOT_RESOLVING: Final = 4
NODE_NOT_EXISTS: Final = 5
INVALID_ARGUMENTS: Final = 8
UNREACHABLE_CODES: Final = frozenset({NODE_NOT_READY, NODE_NOT_RESOLVING})


class MatterClientError(PortnerError):
    """Base of this client's errors."""


class ServerUnavailable(MatterClientError):
    """The Matter server could not be reached, or the connection dropped mid-request."""


class RequestTimedOut(MatterClientError):
    """The server did not answer in time (a Thread lock asleep or out of range, usually)."""


class SchemaMismatch(MatterClientError):
    """The server speaks a schema this client does not support."""


class ServerError(MatterClientError):
    """The server answered with an error. `status`/`cluster_status` are the Matter status codes
    when `details` names them (an interaction the lock itself refused)."""

    def __init__(self, error_code: int, details: str) -> None:
        super().__init__(f"Matter server error {error_code}: {details}")
        self.error_code = error_code
        self.details = details
        self.status, self.cluster_status = status_in(details)

    @property
    def unreachable(self) -> bool:
        return self.error_code in UNREACHABLE_CODES


EventHandler = Callable[[str, Any], None]


class MatterServerClient:
    """One WebSocket connection to a Matter server, shared by every lock behind it."""

    def __init__(self, url: str, *, timeout: float, on_event: EventHandler) -> None:
        self.url = url
        self.timeout = timeout
        self.server_info: dict[str, Any] | None = None
        self._on_event = on_event
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connecting = asyncio.Lock()
        self.nodes_on_listen: Callable[[list[dict[str, Any]]], None] | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def ensure_connected(self) -> None:
        """Connect, check the schema and start listening, unless already connected."""
        async with self._connecting:
            if self._ws is not None:
                return
            try:
                ws = await connect(
                    self.url, open_timeout=self.timeout, max_size=None, logger=WIRE_LOGGER
                )
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                raise ServerUnavailable(
                    f"cannot reach the Matter server at {self.url}: {exc}"
                ) from exc
            try:
                async with asyncio.timeout(self.timeout):
                    info = json.loads(await ws.recv())
                _check_schema(info)
            except SchemaMismatch:
                await ws.close()
                raise
            except (TimeoutError, ConnectionClosed, ValueError) as exc:
                await ws.close()
                raise ServerUnavailable(f"no server_info from {self.url}") from exc
            self.server_info = info
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws), name="matter-server-reader")
        nodes = await self.request("start_listening")
        if self.nodes_on_listen is not None:
            self.nodes_on_listen(list(nodes or []))

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._fail_pending(ServerUnavailable("client closed"))

    async def request(
        self, command: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send one command and return its `result`; raise one of this module's errors."""
        if self._ws is None:
            await self.ensure_connected()
        ws = self._ws
        if ws is None:
            raise ServerUnavailable("not connected to the Matter server")
        message_id = f"portner-{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        message: dict[str, Any] = {"message_id": message_id, "command": command}
        if args is not None:
            message["args"] = args
        try:
            await ws.send(json.dumps(message))
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                return await future
        except TimeoutError as exc:
            raise RequestTimedOut(f"{command}: no answer from the Matter server in time") from exc
        except ConnectionClosed as exc:
            self._lost(ws)
            raise ServerUnavailable(f"{command}: connection to the Matter server lost") from exc
        finally:
            self._pending.pop(message_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._dispatch(raw)
        except ConnectionClosed:
            pass
        finally:
            self._lost(ws)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            LOGGER.warning("Matter server sent a frame that is not JSON; ignored")
            return
        if not isinstance(message, dict):
            return
        if "event" in message:
            self._on_event(str(message["event"]), message.get("data"))
            return
        future = self._pending.get(str(message.get("message_id", "")))
        if future is None or future.done():
            return
        if "error_code" in message:
            future.set_exception(
                ServerError(int(message["error_code"]), str(message.get("details", "")))
            )
        else:
            future.set_result(message.get("result"))

    def _lost(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            self._ws = None
            self._on_event("portner_disconnected", None)
        self._fail_pending(ServerUnavailable("connection to the Matter server lost"))

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)


def _check_schema(info: Any) -> None:
    if not isinstance(info, dict) or "schema_version" not in info:
        raise SchemaMismatch("the first message from the server is not server_info")
    schema = int(info["schema_version"])
    oldest = int(info.get("min_supported_schema_version", schema))
    if schema < MIN_SCHEMA or oldest > MAX_SCHEMA:
        raise SchemaMismatch(
            f"the Matter server speaks schema {oldest}..{schema}; Portner supports "
            f"{MIN_SCHEMA}..{MAX_SCHEMA}"
        )
