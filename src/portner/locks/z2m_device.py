"""A simulated Zigbee2MQTT bridge on a real MQTT broker, serving keypad locks.

Each device is a `portner.locks.keypad_sim.KeypadLockDevice` with Zigbee's 0-based users; this
module only speaks for it, with the topics and payloads a real Zigbee2MQTT publishes for a lock
using the zigbee-herdsman-converters `lock`, `lock_operation_event`, `lock_programming_event`,
`lock_pin_code_response` and `battery` converters and the `pincode_lock` command converter (see
portner.locks.zigbee2mqtt.payloads for the documents):

- `<base>/bridge/devices` (retained): every lock, `supported`, with a definition exposing `lock`
  (`state`, `lock_state`), `battery`, the `pin_code` composite, `action`, `action_source_name`
  and `action_user`;
- `<base>/<name>/availability` (retained): `{"state": "online"|"offline"}`;
- `<base>/<name>`: the device state after each change, as the bridge caches it (`state`,
  `lock_state`, `battery`, `users` read back so far, `last_seen`, `max_pin_users`,
  `min_pin_length`, `max_pin_length`), plus `action`, `action_source`, `action_source_name` and
  `action_user` on the publish of an event;
- `<base>/<name>/set`: `{"state": "LOCK"|"UNLOCK"}` and `{"pin_code": {...}}` (null PIN clears);
  the bridge answers a set PIN with nothing, as the converter does; a duplicate the lock refuses
  is visible only in the read-back;
- `<base>/<name>/get`: `{"pin_code": {"user": N}}`, `{"pin_code": ""}` (all users) and
  `{"state": ""}`; a read-back is published as `users.<N>` = `{"status", "pin_code"}` (the PIN only
  with `expose_pin`), `{"status": "available", "pin_code": {}}` for a lost write (F10).

Simplifications, said plainly: one MQTT connection serves every device (as one bridge does); a
user's read-back replaces that user's cached entry; `last_seen` comes from the simulator's clock,
made strictly increasing per device, and is fixed per device event so a doubled report is
byte-identical. `<base>/portner-sim/...` is the simulator's own control topic (not Zigbee2MQTT):
`keypad_burst` makes each lock in turn unlock by keypad, for the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from portner.locks.keypad_sim import DeviceEvent, KeypadLockDevice, ReadKind
from portner.locks.zigbee2mqtt.backend import NO_DELAY, PENDING_PUBLISHES
from portner.locks.zigbee2mqtt.payloads import as_user_id

_SOURCE: Final = {"keypad": (0, "keypad"), "remote": (1, "rf"), "manual": (2, "manual"),
                  "auto": (2, "manual")}
_LOCK_STATE: Final = {"locked": ("LOCK", "locked"), "unlocked": ("UNLOCK", "unlocked"),
                      "jammed": ("UNLOCK", "not_fully_locked")}
CONTROL: Final = "portner-sim"
_log = logging.getLogger(__name__)


def _exposes() -> list[dict[str, Any]]:
    """The exposes of a keypad lock definition (Zigbee2MQTT `exposes` format, trimmed)."""
    def enum(name: str, values: list[str]) -> dict[str, Any]:
        return {"type": "enum", "name": name, "property": name, "access": 1, "values": values}
    return [
        {"type": "lock", "features": [
            {"type": "binary", "name": "state", "property": "state", "access": 7,
             "value_on": "LOCK", "value_off": "UNLOCK"},
            enum("lock_state", ["not_fully_locked", "locked", "unlocked"])]},
        {"type": "numeric", "name": "battery", "property": "battery", "access": 1, "unit": "%",
         "value_min": 0, "value_max": 100},
        {"type": "composite", "name": "pin_code", "property": "pin_code", "access": 2, "features": [
            {"type": "numeric", "name": "user", "property": "user", "access": 2},
            enum("user_type", ["unrestricted", "year_day_schedule", "week_day_schedule", "master",
                               "non_access"]),
            {"type": "binary", "name": "user_enabled", "property": "user_enabled", "access": 2,
             "value_on": True, "value_off": False},
            {"type": "numeric", "name": "pin_code", "property": "pin_code", "access": 2}]},
        enum("action", ["unknown", "lock", "unlock", "lock_failure_invalid_pin_or_id",
                        "lock_failure_invalid_schedule", "unlock_failure_invalid_pin_or_id",
                        "unlock_failure_invalid_schedule", "one_touch_lock", "key_lock",
                        "key_unlock", "auto_lock", "schedule_lock", "schedule_unlock",
                        "manual_lock", "manual_unlock", "non_access_user_operational_event"]),
        enum("action_source_name", ["keypad", "rfid", "manual", "rf"]),
        {"type": "numeric", "name": "action_user", "property": "action_user", "access": 1},
    ]


def event_fields(event: DeviceEvent) -> dict[str, Any] | None:
    """The `action` fields the converters publish for one device log entry, or None when a real
    lock sends no operation or programming event for it (its state publish says enough)."""
    if event.action in ("unlock", "lock"):
        code, name = _SOURCE.get(event.source, (1, "rf"))
        if event.failure in ("wrong_code", "lockout"):
            action = f"{event.action}_failure_invalid_pin_or_id"
        elif event.failure == "outside_schedule":
            action = f"{event.action}_failure_invalid_schedule"
        elif event.failure:
            return None  # a jam is reported through lock_state
        elif event.source == "manual":
            action = f"manual_{event.action}"
        elif event.source == "auto":
            action = "auto_lock"
        else:
            action = event.action
        return {"action": action, "action_source": code, "action_source_name": name,
                "action_user": event.native if event.source == "keypad" else None}
    if event.action == "codes_changed":
        return {"action": "pin_code_added", "action_source": 0, "action_source_name": "keypad",
                "action_user": event.native}
    return None


class _Served:
    def __init__(self, name: str, device: KeypadLockDevice, index: int) -> None:
        if device.first_native != 0:
            raise ValueError(f"{name}: a Zigbee lock numbers its users from 0")
        self.name, self.device = name, device
        self.ieee = f"0x00124b00{index:08x}"
        self.users: dict[str, dict[str, Any]] = {}
        self.online = device.online
        self.last_stamp: datetime | None = None
        self.event_stamps: dict[int, str] = {}
        self.published = 0


class Z2MBridgeSimulator:
    """Serves `devices` (friendly name -> device) under `base_topic` on the broker."""

    def __init__(self, host: str, port: int, devices: Mapping[str, KeypadLockDevice], *,
                 base_topic: str = "zigbee2mqtt", now: Callable[[], datetime] | None = None,
                 expose_pin: bool = True, qos: int = 0) -> None:
        self.host, self.port, self.base = host, port, base_topic.strip("/")
        self.expose_pin, self.qos = expose_pin, qos
        self._now = now or (lambda: datetime.now(UTC))
        self.served = {name: _Served(name, device, i) for i, (name, device) in enumerate(devices.items())}
        self._client: aiomqtt.Client | None = None
        self._outbox: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.handled = 0

    def device(self, name: str) -> KeypadLockDevice:
        return self.served[name].device

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        client = aiomqtt.Client(self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5, socket_options=NO_DELAY,
                                identifier=f"portner-z2m-sim-{uuid.uuid4().hex[:12]}")
        client.pending_calls_threshold = PENDING_PUBLISHES
        await client.__aenter__()
        self._client = client
        await client.subscribe(f"{self.base}/#", options=SubscribeOptions(qos=self.qos, noLocal=True))
        for served in self.served.values():
            served.device.radio.listen(lambda report, s=served: self._report(s, report))
        self._tasks = [asyncio.create_task(self._write(client)), asyncio.create_task(self._read(client))]
        self._send("bridge/devices", self.devices_payload(), retain=True)
        for served in self.served.values():
            self._send(f"{served.name}/availability", {"state": "online" if served.online else "offline"},
                       retain=True)
        await self.flush()

    async def stop(self) -> None:
        if self._client is None:
            return
        # Leave no retained messages behind for the next user of this base topic.
        self._send("bridge/devices", None, retain=True)
        for served in self.served.values():
            self._send(f"{served.name}/availability", None, retain=True)
        await self.flush()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        client, self._client = self._client, None
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to the broker."""
        await self._outbox.join()

    # --- what the bridge publishes -----------------------------------------------------------------

    def devices_payload(self) -> list[dict[str, Any]]:
        exposes = _exposes()
        return [{"ieee_address": s.ieee, "type": "EndDevice", "network_address": i + 1,
                 "supported": True, "friendly_name": s.name, "power_source": "Battery",
                 "interviewing": False, "interview_completed": True,
                 "definition": {"model": "PORTNER-SIM-KEYPAD", "vendor": "Portner",
                                "description": s.device.model, "options": [], "exposes": exposes}}
                for i, s in enumerate(self.served.values())]

    def _stamp(self, served: _Served) -> str:
        now = self._now().astimezone(UTC)
        if served.last_stamp is not None and now <= served.last_stamp:
            now = served.last_stamp + timedelta(milliseconds=1)
        served.last_stamp = now
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def state_payload(self, served: _Served, *, last_seen: str | None = None) -> dict[str, Any]:
        device = served.device
        state, lock_state = _LOCK_STATE.get(device.bolt, ("UNLOCK", "not_fully_locked"))
        payload: dict[str, Any] = {
            "state": state, "lock_state": lock_state,
            "battery": round(device.battery.percent), "linkquality": 120,
            "max_pin_users": device.capacity, "min_pin_length": min(device.lengths),
            "max_pin_length": max(device.lengths),
            "last_seen": last_seen or self._stamp(served),
        }
        if served.users:
            payload["users"] = {user: dict(entry) for user, entry in served.users.items()}
        return payload

    def _send(self, suffix: str, payload: Any, *, retain: bool = False) -> None:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        self._outbox.put_nowait((f"{self.base}/{suffix}", body, retain))

    def _publish_state(self, served: _Served, extra: dict[str, Any] | None = None,
                       last_seen: str | None = None) -> None:
        payload = self.state_payload(served, last_seen=last_seen)
        if extra:
            payload.update(extra)
        served.published += 1
        self._send(served.name, payload)

    def _report(self, served: _Served, report: object) -> None:
        """A report from the device's radio: publish what the bridge would."""
        if not isinstance(report, DeviceEvent):
            return
        self._availability(served)
        stamp = served.event_stamps.get(report.sequence)
        if stamp is None:
            stamp = served.event_stamps[report.sequence] = self._stamp(served)
        self._publish_state(served, event_fields(report), last_seen=stamp)

    def _availability(self, served: _Served) -> None:
        online = served.device.online
        if online != served.online:
            served.online = online
            self._send(f"{served.name}/availability", {"state": "online" if online else "offline"}, retain=True)

    # --- test hooks (the physical world) ------------------------------------------------------------

    def go_offline(self, name: str) -> None:
        served = self.served[name]
        served.device.go_offline()
        self._availability(served)

    def go_online(self, name: str) -> None:
        served = self.served[name]
        served.device.go_online()
        self._availability(served)

    def publish_raw(self, name: str, payload: Mapping[str, Any]) -> None:
        """Publish exactly `payload` as the device's state (fault tests: odd bridge payloads)."""
        self._send(name, dict(payload))

    # --- what the bridge receives -------------------------------------------------------------------

    async def _write(self, client: aiomqtt.Client) -> None:
        # In order, one at a time: at QoS 0 a publish is done once it is on the socket.
        while True:
            topic, body, retain = await self._outbox.get()
            try:
                await client.publish(topic, body, qos=self.qos, retain=retain)
            except aiomqtt.MqttError:
                pass  # a bridge that cannot reach its broker drops the message, as Zigbee2MQTT does
            finally:
                self._outbox.task_done()

    async def _read(self, client: aiomqtt.Client) -> None:
        prefix = self.base + "/"
        async for message in client.messages:
            topic = message.topic.value
            if not topic.startswith(prefix):
                continue
            rest = topic[len(prefix):]
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                self._handle(rest, payload)
            except Exception as exc:  # noqa: BLE001 - one hostile message must not stop the bridge
                # The payload may hold a PIN: say where and what kind of failure, never the body.
                _log.warning("simulated bridge ignored a message on %s: %s", topic, type(exc).__name__)

    def _handle(self, rest: str, payload: bytes) -> None:
        try:
            body = json.loads(payload) if payload else None
        except (ValueError, RecursionError):
            return  # Zigbee2MQTT logs "Invalid JSON" and does nothing
        name, _, verb = rest.rpartition("/")
        if rest.startswith(CONTROL + "/"):
            self._control(rest[len(CONTROL) + 1:], body)
        elif verb in ("set", "get") and name in self.served and isinstance(body, dict):
            self.handled += 1
            (self._on_set if verb == "set" else self._on_get)(self.served[name], body)

    def _on_set(self, served: _Served, body: dict[str, Any]) -> None:
        device = served.device
        if body.get("state") in ("LOCK", "UNLOCK"):
            before = served.published
            device.remote("lock" if body["state"] == "LOCK" else "unlock")
            # The lock converter reads lockState after a command: publish it when the lock's
            # own event did not (dropped report, or a jammed motor that did not move).
            if served.published == before and device.online:
                self._publish_state(served)
        command = body.get("pin_code")
        if isinstance(command, dict):
            user = as_user_id(command.get("user"))
            if user is None or user >= device.capacity:
                return  # "user must be in range for device": an error in the bridge's log only
            pin = command.get("pin_code")
            if pin is None:
                device.clear_pin(user)
            elif isinstance(pin, (str, int)) and not isinstance(pin, bool):
                device.set_pin(user, str(pin))

    def _on_get(self, served: _Served, body: dict[str, Any]) -> None:
        if "pin_code" in body:
            command = body["pin_code"]
            if isinstance(command, dict) and "user" in command:
                user = as_user_id(command.get("user"))
                users = [user] if user is not None and user < served.device.capacity else []
            else:
                users = list(served.device.natives)
            answered = [u for u in users if self._read_user(served, u)]
            if answered:
                self._publish_state(served)
        elif "state" in body and served.device.online:
            self._publish_state(served)

    def _read_user(self, served: _Served, user: int) -> bool:
        read = served.device.read_pin(user)
        if read.kind is ReadKind.NO_ANSWER:
            return False
        if read.kind is ReadKind.EMPTY:
            entry: dict[str, Any] = {"status": "available"}
        elif read.kind is ReadKind.GARBAGE:
            entry = {"status": "available", "pin_code": {}}
        else:
            entry = {"status": "enabled" if read.enabled is not False else "disabled"}
            if self.expose_pin and read.kind is ReadKind.CODE:
                entry["pin_code"] = read.digits
        served.users[str(user)] = entry
        return True

    def _control(self, verb: str, body: object) -> None:
        if verb == "keypad_burst" and isinstance(body, dict):
            count, code = as_user_id(body.get("events", 0)), body.get("code", "")
            if count is None or not isinstance(code, str):
                return
            names = list(self.served)
            for i in range(count):
                self.served[names[i % len(names)]].device.enter_code(code)
