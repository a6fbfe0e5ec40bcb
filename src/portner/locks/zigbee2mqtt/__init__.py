"""Zigbee2MQTT locks over MQTT: the adapter the registry picks for the backend name "zigbee2mqtt".

`create_backend(config, *, now)`: `config.url` is the broker (`mqtt://127.0.0.1:1883`), options
`base_topic` (default `zigbee2mqtt`), `command_timeout` (seconds, default 10), `qos` (default 0)
and `pin_code_count` (the lock's number of PIN users, when the bridge does not publish
`max_pin_users`). Lock addresses are Zigbee2MQTT friendly names. Slots 1..N are Zigbee users
0..N-1. The payloads follow the Zigbee2MQTT documentation and the zigbee-herdsman-converters lock
converters; `payloads` cites them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from portner.locks.port import BackendConfig
from portner.locks.zigbee2mqtt.backend import Zigbee2MqttBackend, Zigbee2MqttLock


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> Zigbee2MqttBackend:
    return Zigbee2MqttBackend(config, now=now)


__all__ = ["Zigbee2MqttBackend", "Zigbee2MqttLock", "create_backend"]
