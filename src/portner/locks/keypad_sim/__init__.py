"""The simulated keypad lock: a device model with fault injection, and the "simulated" backend.

`KeypadLockDevice` is the device (native user numbers, replies, its own log); `create_backend`
is the lock adapter the registry picks for the name "simulated", speaking the port over
in-process devices. Other simulated vendor devices (Zigbee2MQTT) wrap the same device model.
"""

from portner.locks.keypad_sim.backend import (
    SimulatedKeypadBackend,
    SimulatedKeypadPort,
    create_backend,
    device_options,
)
from portner.locks.keypad_sim.device import MASK, KeypadLockDevice
from portner.locks.keypad_sim.faults import Faults, ReportRadio
from portner.locks.keypad_sim.replies import (
    DeviceEvent,
    DeviceRead,
    DeviceReply,
    ReadKind,
    ReplyKind,
)

__all__ = [
    "MASK", "DeviceEvent", "DeviceRead", "DeviceReply", "Faults", "KeypadLockDevice", "ReadKind",
    "ReplyKind", "ReportRadio", "SimulatedKeypadBackend", "SimulatedKeypadPort", "create_backend",
    "device_options",
]
