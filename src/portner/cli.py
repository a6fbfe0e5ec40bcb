"""The `portner` command line: import plans, read logs, verify the audit chain, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from portner.bootstrap import App, open_app, utcnow
from portner.cli_accounts import add_parsers as add_account_parsers
from portner.config import Settings
from portner.demo.day import DEFAULT_DAY
from portner.domain.care_record import Severity
from portner.domain.errors import PortnerError
from portner.domain.national_id import redact_national_ids
from portner.services.checkpoints import check_checkpoints, cross_check, write_checkpoint
from portner.services.ids import IdSource
from portner.services.importing import ImportReport, import_sources
from portner.services.queries import (
    UnknownResident,
    access_log,
    physical_key_list,
    resident_overview,
)
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository

# soft_wrap: long paths and ids stay on one line when output goes to a file or a pipe.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _settings(args: argparse.Namespace) -> Settings:
    kwargs: dict[str, Any] = {}
    if getattr(args, "db", None):
        kwargs["database_url"] = args.db
    if getattr(args, "data_dir", None):
        kwargs["data_dir"] = Path(args.data_dir)
    if getattr(args, "municipality", None):
        kwargs["municipality_id"] = args.municipality
    return Settings(**kwargs)


def _emit_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


# -- import ----------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from portner.fhir import read_sources

    settings = _settings(args)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        err.print(f"[red]portner import: no such file or folder: {', '.join(missing)}[/red]")
        return 2
    app = open_app(settings, create=True, accept_synthetic_ids=True if args.accept_synthetic_ids else None)
    m = app.municipality
    now = utcnow()
    start = now - timedelta(days=1)
    end = now + (timedelta(days=args.horizon_days) if args.horizon_days else m.plan_horizon)
    sources = read_sources(
        [Path(p) for p in args.paths],
        timezone=m.timezone,
        horizon_start=start,
        horizon_end=end,
        accept_synthetic_ids=m.accept_synthetic_ids,
    )
    report = import_sources(app.engine, m, sources, now=now, ids=IdSource())
    _checkpoint(app)
    if args.json:
        _emit_json(report.as_dict())
    else:
        print_import_report(report, verbose=args.verbose)
    return 1 if report.quarantined and args.strict else 0


def _n(count: int, word: str, plural: str | None = None) -> str:
    """Say "1 visit" or "3 visits"."""
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _shown_path(file: str) -> str:
    """Show a file relative to the working directory when it lies below it."""
    try:
        return str(Path(file).resolve().relative_to(Path.cwd()))
    except ValueError:
        return file


def _checkpoint(app: App) -> None:
    """Sign the audit chain's head after a command that wrote to it (see services/checkpoints)."""
    write_checkpoint(app.engine, app.settings.data_dir, now=utcnow())


def print_import_report(report: ImportReport, *, verbose: bool = False) -> None:
    """Print an import report for people: counts first, then each problem with its place."""
    console.print(
        f"Read {_n(report.files, 'file')}: {_n(report.patients, 'resident record')}, "
        f"{_n(report.practitioners, 'staff record')}, {_n(report.plans_seen, 'visit plan')} "
        f"({report.plans_unchanged} unchanged, {report.plans_rejected} rejected)."
    )
    console.print(
        f"Changes: {report.visits_added} visits added, {report.visits_moved} moved, "
        f"{report.visits_cancelled} cancelled; {report.grants_created} door grants created, "
        f"{report.grants_revoked} revoked; {_n(report.physical_key_visits, 'new visit')} "
        "at homes without an e-lock (physical key)."
    )
    errors = [p for p in report.problems if p.severity is Severity.ERROR]
    skipped = [p for p in report.problems if p.severity is Severity.SKIPPED]
    if errors:
        console.print(f"[yellow]{_n(len(errors), 'entry', 'entries')} quarantined for correction:[/yellow]")
        for p in errors:
            where = f"{_shown_path(p.source.file)}: {p.source.resource_type}/{p.source.resource_id}"
            console.print(f"  [yellow]x[/yellow] {escape(where)} [bold]{escape(p.field)}[/bold]: {escape(p.message)}")
    if skipped and verbose:
        console.print(f"{_n(len(skipped), 'resource')} recognised and skipped:")
        for p in skipped:
            console.print(f"  - {escape(_shown_path(p.source.file))}: {escape(p.message)}")
    elif skipped:
        reasons = Counter(p.message.split(" (")[0] for p in skipped)
        top = reasons.most_common(4)
        shown = ", ".join(f"{n} {msg}" for msg, n in top)
        rest = len(skipped) - sum(n for _, n in top)
        more = f", and {rest} more" if rest else ""
        console.print(
            f"{_n(len(skipped), 'resource')} recognised and skipped ({shown}{more}); --verbose lists them."
        )


# -- access log, quarantine, audit -----------------------------------------------------------
def cmd_access_log(args: argparse.Namespace) -> int:
    app = open_app(_settings(args))
    try:
        lines = access_log(
            app.engine,
            args.resident,
            municipality_id=app.municipality.id,
            reader=args.reader,
            now=utcnow(),
            timezone=app.municipality.timezone,
        )
    except UnknownResident:
        app.engine.dispose()
        shown = escape(redact_national_ids(args.resident))
        err.print(f"[red]portner access-log: no resident {shown} in {app.municipality.id}[/red]")
        return 2
    _checkpoint(app)
    if args.json:
        _emit_json([ln.as_dict() for ln in lines])
        return 0
    if not lines:
        console.print("Nobody has opened or tried this resident's doors yet.")
        return 0
    table = Table(title=f"Who came to {args.resident}'s door")
    for col in ("When", "Door", "Who", "Role", "Result", "Why"):
        table.add_column(col)
    for ln in lines:
        if ln.outcome == "refused":
            why = f"refused: {ln.reason}"
        else:
            why = "planned visit" if ln.planned else "not a planned visit"
        table.add_row(ln.at_local, ln.door, ln.who, ln.role, ln.outcome, why)
    console.print(table)
    return 0


def cmd_residents(args: argparse.Namespace) -> int:
    app = open_app(_settings(args))
    with app.engine.connect() as conn:
        rows = resident_overview(conn, app.municipality.id)
    if args.json:
        _emit_json(rows)
        return 0
    table = Table(title=f"Residents of {app.municipality.name}")
    table.add_column("Resident", no_wrap=True)
    for col in ("Name", "Zone", "E-lock", "Doors"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["name"], r["zone"], r["elock"] or "none (physical key)", str(r["doors"]))
    console.print(table)
    return 0


def cmd_physical_keys(args: argparse.Namespace) -> int:
    app = open_app(_settings(args))
    zone = ZoneInfo(app.municipality.timezone)
    start = datetime.combine(args.date, time(0), zone)
    listed = physical_key_list(
        app.engine, app.municipality.id, start, start + timedelta(days=1), app.municipality.timezone
    )
    with app.engine.connect() as conn:
        repo = Repository(conn)
        names = {a.id: a.display_name for a in repo.actors(app.municipality.id)}
    rows = [
        {
            "visit": v.visit_id,
            "resident": v.resident_id,
            "name": v.name,
            "address": v.address,
            "start": v.start_local,
            "staff": [names.get(s, s) for s in v.staff_ids],
        }
        for v in listed
    ]
    if args.json:
        _emit_json(rows)
        return 0
    table = Table(title=f"Bring a physical key: {args.date.isoformat()} ({_n(len(rows), 'visit')})")
    for col in ("Start", "Resident", "Address", "Staff"):
        table.add_column(col)
    for r in rows:
        staff = ", ".join(r["staff"]) or "[yellow]nobody assigned[/yellow]"
        table.add_row(str(r["start"]), escape(str(r["name"] or r["resident"])), escape(str(r["address"])), staff)
    console.print(table)
    unassigned = sum(1 for r in rows if not r["staff"])
    if unassigned:
        console.print(f"[yellow]{_n(unassigned, 'visit')} with nobody assigned: give them to someone.[/yellow]")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    app = open_app(_settings(args))
    with app.engine.connect() as conn:
        rows = Repository(conn).quarantine(app.municipality.id)
    items = [
        {"id": r.id, "file": r.file, "resource": r.resource, "field": r.field, "message": r.message}
        for r in rows
    ]
    if args.json:
        _emit_json(items)
    else:
        console.print(f"{_n(len(items), 'entry', 'entries')} waiting for correction")
        for i in items:
            console.print(
                f"  #{i['id']} {i['file']}: {i['resource']} {i['field']}: {i['message']}",
                markup=False,
                highlight=False,
            )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    app = open_app(_settings(args))
    with app.engine.connect() as conn:
        result = verify_audit(conn)
        checkpoints, cut = check_checkpoints(conn, app.settings.data_dir)
        missing = cross_check(conn)
    problems = ([] if result.ok else [f"entry {result.first_bad_seq}: {result.problem}"]) + cut + missing
    ok = not problems
    if args.json:
        _emit_json(
            {
                "ok": ok,
                "count": result.count,
                "first_bad_seq": result.first_bad_seq,
                "problem": result.problem,
                "checkpoints_checked": checkpoints,
                "problems": problems,
            }
        )
    elif ok:
        console.print(
            f"[green]Audit chain verified: {result.count} entries, unbroken; "
            f"{checkpoints} signed checkpoint(s) match; every grant, credential and door event "
            "is in it.[/green]"
        )
    else:
        console.print("[red]Audit chain BROKEN:[/red]")
        for problem in problems:
            console.print(f"  [red]x[/red] {escape(problem)}")
    return 0 if ok else 1


def cmd_writeback(args: argparse.Namespace) -> int:
    import httpx

    from portner.services.writeback import FhirEndpointSink, FolderSink, deliver_outbox

    settings = _settings(args)
    target = args.to or settings.encounter_outbox or str(settings.data_dir / "encounters")
    url = _fhir_url(target)
    app = open_app(settings)
    m = app.municipality.id
    if url is not None:
        shown = str(url.copy_with(password="***")) if url.password else str(url)
        if url.scheme == "http" and url.host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"portner writeback: warning: {shown} is not encrypted (use https)")
        with httpx.Client(timeout=10.0) as client:
            sink = FhirEndpointSink(str(url), client)
            result = deliver_outbox(app.engine, sink, municipality_id=m, now=utcnow())
    else:
        shown = target
        result = deliver_outbox(app.engine, FolderSink(Path(target)), municipality_id=m, now=utcnow())
    _checkpoint(app)
    if args.json:
        _emit_json({"delivered": result.delivered, "failed": result.failed, "to": shown})
    else:
        console.print(
            f"{_n(result.delivered, 'Encounter')} delivered to {escape(shown)}; "
            f"{result.failed} failed (kept for retry)."
        )
    return 0 if result.failed == 0 else 1


def _fhir_url(target: str) -> Any:
    """Parse a FHIR server URL (http or https), None for a folder; refuse anything else."""
    import httpx

    if "://" not in target:
        return None
    try:
        url = httpx.URL(target)
    except httpx.InvalidURL as exc:
        raise PortnerError(f"--to {target!r} is not a valid URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise PortnerError(f"--to must be a folder or an http(s) URL, not {url.scheme}://")
    return url


# -- demo and bench --------------------------------------------------------------------------
def _reachable_broker(url: str) -> None:
    """Refuse a bad or unreachable --broker before the demo wipes its folder and imports."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError:
        port = -1
    if parts.scheme != "mqtt" or not parts.hostname or not 0 < port < 65536:
        raise PortnerError(f"--broker must be mqtt://HOST[:PORT], not {url!r}")
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as exc:
        raise PortnerError(f"--broker: cannot reach an MQTT broker at {parts.hostname}:{port} ({exc})") from None


def cmd_demo(args: argparse.Namespace) -> int:
    from portner.demo.day import DemoOptions, run_demo

    if args.locks == "zigbee2mqtt":
        _reachable_broker(args.broker)

    options = DemoOptions(
        seed=args.seed,
        data_dir=Path(args.data_dir) if args.data_dir else Path("portner-data") / "demo",
        db_url=args.db,
        residents=args.residents,
        staff=args.staff,
        fixtures=None if args.no_fixtures else (Path(args.fixtures) if args.fixtures else None),
        use_fixtures=not args.no_fixtures,
        json=args.json,
        day=args.day,
        locks=args.locks,
        broker=args.broker,
    )
    summary = run_demo(options, console=err if args.json else console)
    if args.json:
        _emit_json(summary)
    return 0 if summary["audit"]["ok"] else 1


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from portner.web import serve
    from portner.web.app import check_settings

    settings = _settings(args)
    if args.mode:
        settings = replace(settings, mode=args.mode)
    unnamed: list[str] = []
    if "PORTNER_PUBLIC_URL" not in os.environ:
        if settings.mode == "production":
            # Sign-in redirects, the session cookie's Secure flag and the links sent by SMS are
            # made from it: behind a TLS proxy, this server's own host and port are not it.
            unnamed.append("production mode needs PORTNER_PUBLIC_URL: set it to the https:// "
                           "address people reach this server at (its TLS proxy's)")
        elif settings.development and args.port:
            settings = replace(settings, public_url=f"http://{args.host}:{args.port}")
    if settings.development and settings.named_bridge_url is None:
        # Where this serve runs the bridge (Settings.bridge_url decides whether there is one).
        settings = replace(settings, named_bridge_url=f"http://{args.host}:{args.bridge_port}")
    from portner.bootstrap import UnknownMunicipality, utcnow
    from portner.services.fleet_runtime import backends_from_settings

    check_settings(settings, also=unnamed)  # before saying what is served: a refusal says only why
    lock_backends = backends_from_settings(settings, now=utcnow)  # a bad lock setting stops us here
    demo = settings.development and not settings.database_url and not args.no_demo
    if demo:
        prepared = serve.prepare_demo(settings)
        settings = prepared.settings
        console.print(
            f"[bold]Portner[/bold] (development) - Demokommune, {prepared.day.isoformat()}"
            + (" (demo data made now)" if prepared.made else "")
        )

    def announce() -> None:  # once the server is made: a refusal before says only why
        console.print(f"Open {settings.public_url}/ and sign in (development sign-in: choose a user)."
                      if settings.development else f"Serving on {settings.public_url}/")
        console.print(f"API: {settings.public_url}/api/v1, OpenAPI: {settings.public_url}/openapi.json")
        if settings.development:
            console.print(f"Lock radio bridge (simulated locks, stands in for Bluetooth): {settings.bridge_url}")
        if lock_backends:
            console.print("Lock backends: " + ", ".join(sorted(lock_backends)) + " (PORTNER_LOCKS); the lock "
                          "fleet worker onboards their locks and keeps their codes in step")

    try:
        serve.run(settings, host=args.host, port=args.port, announce=announce,
                  bridge_port=args.bridge_port if settings.development else None, workers=args.workers)
    except UnknownMunicipality as exc:
        raise UnknownMunicipality(f"{exc} (a new database: `portner accounts add --role admin ...` makes "
                                  "the municipality with its first administrator)") from None
    return 0


def cmd_bench_service(args: argparse.Namespace) -> int:
    """The service's figures in one run: HTTP latency at a fixed rate, and ingest into PostgreSQL."""
    from portner.benchmarks import ingest, latency

    pg = args.pg or os.environ.get("PORTNER_TEST_PG_URL", latency.DEFAULT_PG)
    lat = latency.run_latency_bench(rate=args.rate, seconds=args.seconds, pg_url=pg, workers=args.workers)
    ing = ingest.run_ingest_bench(pg, events=args.events, locks=args.locks, repeats=args.repeats,
                                  per_lock_transactions=False)
    met = all(lat["met"].values()) and ing["ingest_per_s"] >= ingest.TARGETS["per_s"] \
        and ing["ratio"] >= ingest.TARGETS["ratio"]
    if args.json:
        _emit_json({"latency": lat, "ingest": ing, "all_targets_met": met})
    else:
        latency.print_report(lat)
        console.print(
            f"Door-event ingest into PostgreSQL with the audit chain: {ing['ingest_per_s']:,.0f} events/s "
            f"(target >= {ingest.TARGETS['per_s']:,}) against raw COPY of the same rows "
            f"{ing['copy_per_s']:,.0f}/s: ratio {ing['ratio']:.2f} (target >= {ingest.TARGETS['ratio']})"
        )
    return 1 if args.check and not met else 0


def cmd_bench_locks(args: argparse.Namespace) -> int:
    """Zigbee2MQTT locks through the real broker, against the broker's own round trip."""
    from portner.benchmarks import mqtt

    result = mqtt.run_from_args(args)
    if args.json:
        _emit_json(result)
    else:
        for line in mqtt.report_lines(result):
            console.print(line, highlight=False)
    return 1 if args.check and not result["met"] else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from portner.bench import run_bench

    return run_bench(args)


def _days(value: str) -> int:
    days = int(value)
    if not 1 <= days <= 366:
        raise argparse.ArgumentTypeError("must be between 1 and 366")
    return days


def _demo_day(value: str) -> date:
    day = date.fromisoformat(value)
    if not 2000 <= day.year <= 2099:
        raise argparse.ArgumentTypeError("choose a day between 2000 and 2099")
    return day


def _reader(value: str) -> str:
    # The reader is written to the audit log: an id such as "stf-..." or "cli:operator", never a
    # name or a national id.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}", value) or re.search(r"\d{11}", value):
        raise argparse.ArgumentTypeError("give a pseudonymous id such as stf-1a2b or cli:operator")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portner", description="Open door access for municipal home care."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="database URL (default: SQLite file in the data directory)")
    common.add_argument("--data-dir", help="data directory (default: ./portner-data)")
    common.add_argument("--municipality", help="municipality id (default: kommune)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", parents=[common], help="import FHIR visit plans and residents")
    p.add_argument("paths", nargs="+", help="FHIR files or folders (STU3/R4, XML/JSON)")
    p.add_argument("--accept-synthetic-ids", action="store_true",
                   help="accept national test-registry ids (test and demo environments only)")
    p.add_argument("--horizon-days", type=_days, help="expand open-ended plans this many days (1-366)")
    p.add_argument("--strict", action="store_true", help="exit 1 when anything was quarantined")
    p.add_argument("--verbose", action="store_true", help="list every skipped resource")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("access-log", parents=[common], help="who came to a resident's door, when")
    p.add_argument("--resident", required=True, help="resident id (res-...)")
    p.add_argument("--reader", type=_reader, default="cli:operator",
                   help="who is reading, as a pseudonymous id (logged)")
    p.set_defaults(func=cmd_access_log)

    p = sub.add_parser("residents", parents=[common], help="list residents, their zone and doors")
    p.set_defaults(func=cmd_residents)

    p = sub.add_parser("physical-keys", parents=[common],
                       help="visits at homes without an e-lock: who must bring a key")
    p.add_argument("--date", type=date.fromisoformat, default=date.today(),
                   help="the day, YYYY-MM-DD (default today)")
    p.set_defaults(func=cmd_physical_keys)

    p = sub.add_parser("quarantine", parents=[common], help="entries waiting for correction")
    p.set_defaults(func=cmd_quarantine)

    p = sub.add_parser("writeback", parents=[common], help="send finished visits to the care record")
    p.add_argument("--to", help="folder or FHIR base URL (default: PORTNER_FHIR_OUTBOX or <data>/encounters)")
    p.set_defaults(func=cmd_writeback)

    p = sub.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser("verify", parents=[common], help="verify the hash chain")
    v.set_defaults(func=cmd_audit_verify)

    add_account_parsers(sub, common, _settings, _reader)

    p = sub.add_parser("demo", help="run a synthetic municipality's day end to end")
    p.add_argument("--seed", type=int, default=2026, help="fixed seed reproduces the day")
    p.add_argument("--day", type=_demo_day, default=DEFAULT_DAY,
                   help=f"the day to simulate, YYYY-MM-DD (default {DEFAULT_DAY.isoformat()})")
    p.add_argument("--db", help="database URL (default: SQLite in the demo folder)")
    p.add_argument("--data-dir", help="demo folder (default: ./portner-data/demo), wiped first")
    p.add_argument("--residents", type=int, default=300)
    p.add_argument("--staff", type=int, default=40)
    p.add_argument("--fixtures", help="HL7 Norway fixtures folder (default: ../shared/fixtures)")
    p.add_argument("--no-fixtures", action="store_true", help="do not import the HL7 examples")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--locks", choices=("simulated", "zigbee2mqtt"),
                   default=os.environ.get("PORTNER_DEMO_LOCKS", "simulated"),
                   help="simulated: phone keys checked offline by simulated locks (default); zigbee2mqtt: "
                        "Zigbee keypad locks behind Zigbee2MQTT through the MQTT broker")
    p.add_argument("--broker", default=os.environ.get("PORTNER_LOCKS_URL", "mqtt://127.0.0.1:1883"),
                   help="the MQTT broker for --locks zigbee2mqtt (default mqtt://127.0.0.1:1883)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench-service", help="HTTP latency and door-event ingest, against baselines")
    p.add_argument("--rate", type=float, default=200, help="requests per second (default 200)")
    p.add_argument("--seconds", type=float, default=10, help="seconds per endpoint (default 10)")
    p.add_argument("--events", type=int, default=20000, help="door events for the ingest run")
    p.add_argument("--locks", type=int, default=100, help="locks the ingest run's events come from (default 100)")
    p.add_argument("--repeats", type=int, default=3,
                   help="ingest and COPY runs each; medians are reported (default 3)")
    p.add_argument("--workers", type=_at_least_one, default=os.cpu_count() or 1,
                   help="server worker processes, the same for the bare and the real server (default: one per core)")
    p.add_argument("--pg", default=None, help="PostgreSQL URL (default: PORTNER_TEST_PG_URL, else "
                   "postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_service)

    p = sub.add_parser("bench-locks", help="Zigbee2MQTT locks through the MQTT broker, against its round trip")
    from portner.benchmarks.mqtt import add_arguments as _bench_locks_arguments

    _bench_locks_arguments(p)
    p.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_locks)

    p = sub.add_parser("serve", parents=[common], help="the API and the web apps")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--bridge-port", type=int, default=8001,
                   help="development: the simulated locks' radio bridge (stands in for Bluetooth)")
    p.add_argument("--mode", choices=["development", "production"],
                   help="default: PORTNER_MODE or development")
    p.add_argument("--no-demo", action="store_true",
                   help="development without the demo municipality (use --db/--municipality)")
    p.add_argument("--workers", type=_at_least_one, default=1,
                   help="production with PostgreSQL: API worker processes (one per core is usual)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="measure throughput, verification cost, size and memory")
    p.add_argument("--visits", type=int, default=5000, help="visits for the throughput run")
    p.add_argument("--oslo-visits", type=int, default=50000, help="visits for the memory run")
    p.add_argument("--pg", default=None, help="PostgreSQL URL (default: the local test database)")
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL run")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (PortnerError, OSError, ValueError) as exc:
        # Our own errors, files that cannot be read, values that do not parse: say what and
        # where, without a traceback (the messages never contain national ids).
        message = redact_national_ids(str(exc))
        err.print(f"portner {args.command}: {escape(message)}", markup=True, highlight=False)
        return 2
    except ImportError as exc:
        # e.g. --db mysql://...: only SQLite and PostgreSQL drivers are installed.
        err.print(f"portner {args.command}: no driver for this database ({exc.name}); "
                  "use sqlite:///FILE or postgresql://...", highlight=False)
        return 2
    except SQLAlchemyError as exc:
        reason = type(exc.orig or exc).__name__ if isinstance(exc, DBAPIError) else type(exc).__name__
        if "locked" in str(exc).lower():
            reason = "the database is busy (another Portner process is writing); try again"
        err.print(f"portner {args.command}: the database could not be used: {reason}", highlight=False)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
