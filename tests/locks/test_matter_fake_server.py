"""A local Matter server for the adapter's tests: the OHF server's wire format over a fake Door Lock.

Why a fake: the OHF matter.js server (npm `matter-server`, `@matter-server/ws-controller`) is not
in the npm registry this project can reach, so the real server cannot run here; see the report
in tests/locks/test_matter.py. What it follows, exactly:

- the WebSocket API as matter-js/matterjs-server `docs/websockets_api.md` publishes it:
  `server_info` first, `{message_id, result}` / `{message_id, error_code, details}`,
  `start_listening` returning every node, events `{event, data}` (`attribute_updated` as
  `[node_id, "ep/cluster/attr", value]`, `node_updated`, `node_event` with `event_number`,
  `timestamp`, `timestamp_type`), error code 3 for a node that is not ready;
- the server's converters (`packages/ws-controller/src/server/Converters.ts`): attribute values
  tag-based, command payloads and responses and event data name-based in camelCase, octet
  strings base64, and a device's status error forwarded as error 0 with matter.js's message
  "... (code N; cluster code M)";
- the timed-interaction requirement of the "T" commands (NEEDS_TIMED_INTERACTION, 0xC6);
- behind it, the Door Lock of tests/locks/test_matter_fake_lock.py, answering as matter.js 0.17.9.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.locks.test_matter_fake_lock import DOOR_LOCK, FakeDoorLock, StatusError

WIRE_LOGGER = logging.getLogger("tests.matter.wire")
WIRE_LOGGER.setLevel(logging.INFO)  # frames carry PINs; see portner.locks.matter.client

TIMED = {"LockDoor", "UnlockDoor", "SetUser", "SetCredential", "ClearUser", "ClearCredential"}


class FakeMatterServer:
    """Serves one node (`node_id`) holding `lock` at `endpoint`, on 127.0.0.1 and a free port."""

    def __init__(self, lock: FakeDoorLock, *, node_id: int = 5, endpoint: int = 1) -> None:
        self.lock, self.node_id, self.endpoint = lock, node_id, endpoint
        self.available = True
        self.silent = False  # the server itself stops answering (a hung connection)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._event_number = 1000
        self._listeners: set[ServerConnection] = set()
        self._server: Server | None = None
        self.attributes = {
            **lock.attributes(endpoint),
            "0/40/1": "matter.js",
            "0/40/3": "DoorLock",
            f"{endpoint}/47/12": 180,
        }
        lock.emit, lock.set_attribute = self._emit, self._set_attribute

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/ws"

    async def start(self) -> None:
        self._server = await serve(self._serve, "127.0.0.1", 0, logger=WIRE_LOGGER)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def device_commands(self) -> int:
        return sum(
            1 for command, _ in self.received if command in ("device_command", "read_attribute")
        )

    def node(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "date_commissioned": "2026-11-30T09:00:00.000000",
            "last_interview": "2026-12-01T09:00:00.000000",
            "interview_version": 6,
            "available": self.available,
            "is_bridge": False,
            "attributes": dict(self.attributes),
            "attribute_subscriptions": [],
        }

    async def drop_connections(self) -> None:
        """Close every client connection, as a server restart or a network blip does."""
        for ws in list(self._listeners):
            await ws.close()

    def set_available(self, available: bool) -> None:
        self.available = available
        self._broadcast({"event": "node_updated", "data": self.node()})

    async def _serve(self, ws: ServerConnection) -> None:
        await ws.send(
            json.dumps(
                {
                    "fabric_id": 1,
                    "compressed_fabric_id": 8806138795467447296,
                    "schema_version": 14,
                    "min_supported_schema_version": 11,
                    "sdk_version": "matter-server/1.1.7 (matter.js/0.17.9)",
                    "wifi_credentials_set": False,
                    "thread_credentials_set": False,
                    "bluetooth_enabled": False,
                }
            )
        )
        try:
            async for raw in ws:
                request = json.loads(raw)
                self.received.append((request["command"], request.get("args") or {}))
                if self.silent:
                    continue
                await ws.send(json.dumps(self._answer(ws, request)))
        finally:
            self._listeners.discard(ws)

    def _answer(self, ws: ServerConnection, request: dict[str, Any]) -> dict[str, Any]:
        message_id, command, args = (
            request["message_id"],
            request["command"],
            request.get("args") or {},
        )
        try:
            if command == "start_listening":
                self._listeners.add(ws)
                return {"message_id": message_id, "result": [self.node()]}
            if (
                command in ("get_node", "read_attribute", "device_command")
                and args.get("node_id", self.node_id) != self.node_id
            ):
                return {
                    "message_id": message_id,
                    "error_code": 5,
                    "details": f"Node {args['node_id']} does not exist",
                }
            if command == "get_nodes":
                return {"message_id": message_id, "result": [self.node()]}
            if command in ("read_attribute", "device_command") and not self.available:
                return {
                    "message_id": message_id,
                    "error_code": 3,
                    "details": f"Node {self.node_id} is not ready",
                }
            if command == "read_attribute":
                path = args["attribute_path"]
                return {"message_id": message_id, "result": {path: self.attributes.get(path)}}
            if command == "device_command":
                if args["command_name"] in TIMED and not args.get("timed_request_timeout_ms"):
                    raise StatusError("Timed interaction required", 0xC6)
                result = self.lock.invoke(args["command_name"], args.get("payload") or {})
                return {"message_id": message_id, "result": result}
            return {
                "message_id": message_id,
                "error_code": 9,
                "details": f"Unknown command: {command}",
            }
        except StatusError as exc:
            return {"message_id": message_id, "error_code": 0, "details": str(exc)}

    def _emit(self, event_id: int, data: dict[str, Any]) -> None:
        self._event_number += 1
        self._broadcast(
            {
                "event": "node_event",
                "data": {
                    "node_id": self.node_id,
                    "endpoint_id": self.endpoint,
                    "cluster_id": DOOR_LOCK,
                    "event_id": event_id,
                    "event_number": self._event_number,
                    "priority": 2,
                    "timestamp": int(self.lock.now().timestamp() * 1000),
                    "timestamp_type": 1,
                    "data": data,
                },
            }
        )

    def _set_attribute(self, attribute: int, value: Any) -> None:
        path = f"{self.endpoint}/{DOOR_LOCK}/{attribute}"
        self.attributes[path] = value
        self._broadcast({"event": "attribute_updated", "data": [self.node_id, path, value]})

    def _broadcast(self, message: dict[str, Any]) -> None:
        frame = json.dumps(message)
        for ws in list(self._listeners):
            asyncio.get_running_loop().create_task(self._send(ws, frame))

    async def _send(self, ws: ServerConnection, frame: str) -> None:
        try:
            await ws.send(frame)
        except ConnectionClosed:
            self._listeners.discard(ws)  # a client that left; its loss is the client's business


# --- the fake's own checks: it answers as the published examples say --------------------------


@pytest.fixture
async def fake() -> Any:
    server = FakeMatterServer(FakeDoorLock(now=lambda: datetime(2026, 12, 3, 12, tzinfo=UTC)))
    await server.start()
    yield server
    await server.stop()


@pytest.mark.anyio
async def test_first_frame_is_server_info_and_errors_follow_the_schema(
    fake: FakeMatterServer,
) -> None:
    from websockets.asyncio.client import connect

    async with connect(fake.url, logger=WIRE_LOGGER) as ws:
        info = json.loads(await ws.recv())
        assert {
            "fabric_id",
            "schema_version",
            "min_supported_schema_version",
            "sdk_version",
        } <= set(info)
        await ws.send(json.dumps({"message_id": "1", "command": "no_such_command"}))
        assert json.loads(await ws.recv()) == {
            "message_id": "1",
            "error_code": 9,
            "details": "Unknown command: no_such_command",
        }
        await ws.send(
            json.dumps(
                {
                    "message_id": "2",
                    "command": "device_command",
                    "args": {
                        "node_id": 5,
                        "endpoint_id": 1,
                        "cluster_id": 257,
                        "command_name": "UnlockDoor",
                        "payload": {},
                    },
                }
            )
        )
        reply = json.loads(await ws.recv())
        assert reply["error_code"] == 0 and reply["details"].endswith("(code 198)")
