"""Zigbee2MQTT locks through the real broker: commands, unlock latency and events, against the
broker's own round trip measured in the same run.

`portner bench-locks` (or `python -m portner.benchmarks.mqtt`) starts, in a second process, one
simulated Zigbee2MQTT bridge (portner.locks.z2m_device: one MQTT connection serving every lock,
as one real bridge does) with `--locks` keypad locks, and connects Portner's Zigbee2MQTT backend
(one MQTT connection for all its locks) to the same broker. It waits until the backend has seen
every lock announced online, then measures:

- **broker round trip**: a separate client in the platform's process publishes to a topic it
  subscribes to and waits for the message to come back (one publish/subscribe echo);
- **unlock latency**: the platform publishes `{"state": "UNLOCK"}` (or LOCK) to a random lock's
  `/set`, the simulated lock moves its bolt and the bridge publishes the new state, and the
  adapter confirms it (`operate` returns CONFIRMED). Latency samples alternate with echo samples,
  one at a time, so both see the same machine; p50/p99 of each and the ratio of the p99s
  (target: unlock p99 <= 3 x broker p99, with all locks connected);
- **commands per second**: `--commands` lock/unlock commands with `--concurrency` in flight (never
  two on one lock), each confirmed by the lock's state;
- **events per second**: the simulator makes `--events` keypad unlocks round-robin over all locks;
  the figure is how fast the adapter turns them into normalised LockEvents.

The two processes share this machine's cores with the broker; the figures are for this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import random
import socket
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlsplit

TARGET_RATIO = 3.0
BENCH_CODE = "258046"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def lock_name(i: int) -> str:
    return f"bench-lock-{i:04d}"


# --- the simulator process -------------------------------------------------------------------------


def _serve(host: str, port: int, base: str, locks: int, qos: int, ready: Any, stop: Any) -> None:
    from portner.locks.keypad_sim import KeypadLockDevice
    from portner.locks.z2m_device import Z2MBridgeSimulator

    def now() -> datetime:
        return datetime.now(UTC)

    async def main() -> None:
        devices = {}
        for i in range(locks):
            device = KeypadLockDevice(now, first_native=0, capacity=30, seed=i)
            device.set_pin(0, BENCH_CODE)  # before the bridge listens: no event for it
            devices[lock_name(i)] = device
        sim = Z2MBridgeSimulator(host, port, devices, base_topic=base, qos=qos)
        await sim.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await sim.stop()

    asyncio.run(main())


# --- the platform side -----------------------------------------------------------------------------


class _Echo:
    """The broker's own round trip: publish to a topic we subscribe to, wait for it to return."""

    def __init__(self, host: str, port: int, topic: str, qos: int) -> None:
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self._waiting: dict[bytes, asyncio.Future[None]] = {}

    async def __aenter__(self) -> Self:
        import aiomqtt

        from portner.locks.zigbee2mqtt.backend import NO_DELAY

        self._client = aiomqtt.Client(self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5,
                                      socket_options=NO_DELAY,
                                      identifier=f"portner-bench-echo-{uuid.uuid4().hex[:8]}")
        await self._client.__aenter__()
        await self._client.subscribe(self.topic, qos=self.qos)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self._client.messages:
            future = self._waiting.pop(bytes(message.payload), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(None)

    async def once(self, n: int) -> float:
        body = json.dumps({"echo": n, "state": "UNLOCK"}).encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[body] = future
        start = time.perf_counter()
        await self._client.publish(self.topic, body, qos=self.qos)
        async with asyncio.timeout(10):
            await future
        return time.perf_counter() - start

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self._client.__aexit__(None, None, None)


async def _measure(host: str, port: int, base: str, *, locks: int, commands: int, samples: int,
                   events: int, concurrency: int, qos: int, seed: int) -> dict[str, Any]:
    from portner.locks.port import BackendConfig, LockEvent, Operation, Source
    from portner.locks.zigbee2mqtt import create_backend

    rng = random.Random(seed)
    backend = create_backend(BackendConfig("zigbee2mqtt", url=f"mqtt://{host}:{port}", options={
        "base_topic": base, "command_timeout": "20", "qos": str(qos)}), now=lambda: datetime.now(UTC))
    ports = [backend.lock(lock_name(i)) for i in range(locks)]
    keypad_seen = 0
    burst_done = asyncio.Event()

    async def pump() -> None:
        nonlocal keypad_seen
        async for event in backend.events():
            if isinstance(event, LockEvent) and event.source is Source.KEYPAD:
                keypad_seen += 1
                if keypad_seen >= events:
                    burst_done.set()

    await backend.start()
    pumping = asyncio.create_task(pump())
    try:
        deadline = time.monotonic() + 60
        while True:
            online = sum([(await p.health()).online is True for p in ports])
            if online == locks or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        bolts = {p.address: "locked" for p in ports}

        def next_op(address: str) -> Operation:
            op = Operation.UNLOCK if bolts[address] == "locked" else Operation.LOCK
            bolts[address] = "unlocked" if op is Operation.UNLOCK else "locked"
            return op

        # The echo topic lies outside the bridge's base topic: neither the simulator nor the adapter
        # receives it, so it adds no traffic (or TCP acknowledgements) to the locks' path.
        async with _Echo(host, port, f"{base}-echo/{uuid.uuid4().hex[:6]}", qos) as echo:
            for n in range(min(20, samples)):  # warm both paths up
                await echo.once(-n - 1)
                warm = ports[rng.randrange(locks)]
                await warm.operate(next_op(warm.address))
            echo_times, unlock_times, failures = [], [], 0
            for n in range(samples):
                echo_times.append(await echo.once(n))
                target = ports[rng.randrange(locks)]
                op = next_op(target.address)
                start = time.perf_counter()
                result = await target.operate(op)
                elapsed = time.perf_counter() - start
                if result.ok:
                    unlock_times.append(elapsed)
                else:
                    failures += 1

        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in rng.sample(range(locks), locks):
            queue.put_nowait(i)
        confirmed = 0

        async def worker(todo: int) -> None:
            nonlocal confirmed
            for _ in range(todo):
                i = await queue.get()
                port_ = ports[i]
                if (await port_.operate(next_op(port_.address))).ok:
                    confirmed += 1
                queue.put_nowait(i)

        width = max(1, min(concurrency, locks, commands))
        shares = [commands // width + (1 if k < commands % width else 0) for k in range(width)]
        start = time.perf_counter()
        await asyncio.gather(*(worker(share) for share in shares))
        command_seconds = time.perf_counter() - start

        keypad_seen = 0
        start = time.perf_counter()
        await backend._client.publish(  # the simulator's control topic (not Zigbee2MQTT)
            f"{base}/portner-sim/keypad_burst", json.dumps({"events": events, "code": BENCH_CODE}), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(30.0, events / 100)):
                await burst_done.wait()
        event_seconds = time.perf_counter() - start
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        await backend.stop()

    echo_p99, unlock_p99 = _percentile(echo_times, 99), _percentile(unlock_times, 99)
    return {
        "locks": locks, "locks_online": online, "connections": {"simulator": 1, "adapter": 1},
        "qos": qos,
        "commands": commands, "commands_confirmed": confirmed,
        "commands_per_s": confirmed / command_seconds if command_seconds else 0.0,
        "concurrency": width,
        "samples": samples, "unlock_failures": failures,
        "unlock_p50_ms": _percentile(unlock_times, 50) * 1000, "unlock_p99_ms": unlock_p99 * 1000,
        "unlock_mean_ms": statistics.fmean(unlock_times) * 1000 if unlock_times else float("nan"),
        "broker_p50_ms": _percentile(echo_times, 50) * 1000, "broker_p99_ms": echo_p99 * 1000,
        "ratio_p99": unlock_p99 / echo_p99 if echo_p99 else float("nan"),
        "events": events, "events_received": keypad_seen,
        "events_per_s": keypad_seen / event_seconds if event_seconds else 0.0,
    }


def run_mqtt_bench(host: str = "127.0.0.1", port: int = 1883, *, locks: int = 1000,
                   commands: int = 5000, samples: int = 1000, events: int = 10000,
                   concurrency: int = 64, qos: int = 0, seed: int = 2026) -> dict[str, Any]:
    """Run the whole benchmark (simulator in a second process) and return its figures."""
    base = f"portner-bench-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    sim = context.Process(target=_serve, args=(host, port, base, locks, qos, ready, stop), daemon=True)
    sim.start()
    try:
        deadline = time.monotonic() + 120
        while not ready.wait(0.5):  # a simulator that died (a broker that went away) is not waited for
            if not sim.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulated Zigbee2MQTT bridge did not start (is the broker up?)")
        result = asyncio.run(_measure(host, port, base, locks=locks, commands=commands, samples=samples,
                                      events=events, concurrency=concurrency, qos=qos, seed=seed))
    finally:
        stop.set()
        sim.join(30)
        if sim.is_alive():
            sim.terminate()
            sim.join(5)
    result["met"] = result["ratio_p99"] <= TARGET_RATIO and result["locks_online"] == locks
    return result


def report_lines(r: dict[str, Any]) -> list[str]:
    return [
        (f"Zigbee2MQTT locks through the broker: {r['locks_online']} of {r['locks']} simulated locks online "
         f"(one simulator process and connection serving them all; one adapter connection), QoS {r['qos']}"),
        (f"Commands per second: {r['commands_per_s']:,.0f} ({r['commands_confirmed']} of {r['commands']} "
         f"lock/unlock commands confirmed by the lock's state, {r['concurrency']} in flight)"),
        (f"End-to-end unlock latency (publish UNLOCK -> lock state -> adapter confirms): "
         f"p50 {r['unlock_p50_ms']:.2f} ms, p99 {r['unlock_p99_ms']:.2f} ms over {r['samples']} commands "
         f"({r['unlock_failures']} not confirmed)"),
        (f"Broker round trip (publish/subscribe echo, same run): p50 {r['broker_p50_ms']:.2f} ms, "
         f"p99 {r['broker_p99_ms']:.2f} ms"),
        (f"Unlock p99 / broker p99: {r['ratio_p99']:.2f} (target <= {TARGET_RATIO:.0f}): "
         + ("met" if r["met"] else "missed")),
        (f"Events per second: {r['events_per_s']:,.0f} ({r['events_received']} of {r['events']} keypad "
         f"unlocks from {r['locks']} locks normalised by the adapter)"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883",
                        help="the MQTT broker, mqtt://HOST[:PORT] (as for portner demo; HOST:PORT also works)")
    parser.add_argument("--locks", type=int, default=1000, help="simulated Zigbee2MQTT locks (default 1000)")
    parser.add_argument("--commands", type=int, default=5000, help="commands for the throughput run")
    parser.add_argument("--samples", type=int, default=1000, help="unlock and echo latency samples")
    parser.add_argument("--events", type=int, default=10000, help="keypad events for the event run")
    parser.add_argument("--concurrency", type=int, default=64, help="commands in flight (throughput run)")
    parser.add_argument("--qos", type=int, choices=[0, 1, 2], default=0,
                        help="MQTT QoS of every publish (default 0, as Zigbee2MQTT's own default)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    broker = args.broker if "://" in args.broker else f"mqtt://{args.broker}"
    url = urlsplit(broker)
    try:
        port = url.port or 1883
    except ValueError:
        port = -1
    if url.scheme != "mqtt" or not url.hostname or not 0 < port < 65536:
        raise ValueError(f"--broker must be mqtt://HOST[:PORT], not {args.broker!r}")
    host = url.hostname
    try:  # fail at once, not from the simulator's process, when nothing listens there
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise ValueError(f"--broker: cannot reach an MQTT broker at {host}:{port} ({exc})") from None
    for name in ("locks", "commands", "samples", "events", "concurrency"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    return run_mqtt_bench(host, port, locks=args.locks, commands=args.commands,
                          samples=args.samples, events=args.events, concurrency=args.concurrency,
                          qos=args.qos)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portner.benchmarks.mqtt")
    add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_from_args(args)
    print(json.dumps(result, indent=2) if args.json else "\n".join(report_lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
