"""Read FHIR files (STU3/R4 XML, R4 JSON; single resources or Bundles) into ParsedSource.

The content decides the format, not the file name: text starting with "<" is XML, "{" is JSON.
Directory walks pick *.xml and *.json only; a file named explicitly is read whatever its suffix
(an export named .cml that holds FHIR JSON is read as FHIR). Anything that is not a FHIR resource
(HTML, a validator report, broken XML or JSON) is one ERROR problem naming the file and the
reason: it was meant as input and cannot be used, so someone should look at it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError
from zoneinfo import ZoneInfo

from defusedxml import DefusedXmlException

from portner.domain.care_record import ParsedSource, Severity, SourceRef
from portner.domain.windows import require_aware
from portner.fhir.appointment import read_appointment
from portner.fhir.careplan import read_careplan
from portner.fhir.context import (
    DEFAULT_VISIT_LENGTH,
    ReadContext,
    problem,
    raw_json,
    reference_keys,
    resource_label,
)
from portner.fhir.people import read_patient, read_practitioner
from portner.fhir.tree import NotFhir, items, one, parse_xml, text

LOGGER = logging.getLogger(__name__)

# Care-record exports are small; anything this big is not one of them.
MAX_FILE_BYTES = 20 * 1024 * 1024
SUFFIXES = (".xml", ".json")


class SourceFileError(OSError):
    """A source file could not be read at all (missing, unreadable); names the file."""


class _Unparseable(ValueError):
    """The text is not a FHIR resource; the message says why (and holds no content)."""


def read_sources(
    paths: Sequence[Path],
    *,
    timezone: str,
    horizon_start: datetime,
    horizon_end: datetime,
    accept_synthetic_ids: bool,
    default_visit_length: timedelta = DEFAULT_VISIT_LENGTH,
) -> list[ParsedSource]:
    """Read files and directories (walked recursively for *.xml/*.json, sorted) in order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_files_below(path))
        else:
            files.append(path)
    return [
        read_source(
            f,
            timezone=timezone,
            horizon_start=horizon_start,
            horizon_end=horizon_end,
            accept_synthetic_ids=accept_synthetic_ids,
            default_visit_length=default_visit_length,
        )
        for f in files
    ]


def _files_below(folder: Path) -> list[Path]:
    """Regular *.xml/*.json files below `folder`, sorted; symbolic links are not followed.

    A link could bring in a file from anywhere on the machine (or a device that never ends);
    naming such a file explicitly on the command line still works.
    """
    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in names:
            p = Path(root) / name
            if p.suffix.lower() in SUFFIXES and not p.is_symlink() and p.is_file():
                found.append(p)
    return sorted(found, key=lambda p: p.as_posix())


def read_source(
    path: Path,
    *,
    timezone: str,
    horizon_start: datetime,
    horizon_end: datetime,
    accept_synthetic_ids: bool,
    default_visit_length: timedelta = DEFAULT_VISIT_LENGTH,
) -> ParsedSource:
    """Read one file; raise SourceFileError only when the file itself cannot be read."""
    name = str(path)
    try:
        # One open for both the size check and the read (a day is thousands of small files).
        if not path.is_file():  # a FIFO or device would hang or never end; a folder is no file
            raise SourceFileError(errno.EINVAL, f"cannot read FHIR source {name}: not a regular file")
        with open(path, "rb") as handle:
            # Read at most one byte past the limit, whatever the file claims its size to be (a
            # file can grow while we read). Sized by fstat: read(n) allocates n bytes up front.
            claimed = os.fstat(handle.fileno()).st_size
            data = handle.read(min(claimed, MAX_FILE_BYTES) + 1)
            if claimed < len(data) <= MAX_FILE_BYTES:  # it grew meanwhile: read on, bounded
                data += handle.read(MAX_FILE_BYTES + 1 - len(data))
            size = len(data)
            if size > MAX_FILE_BYTES:
                data = b""
    except OSError as exc:
        raise SourceFileError(exc.errno, f"cannot read FHIR source {name}: {exc.strerror}") from exc
    ctx = _context(
        name, timezone, horizon_start, horizon_end, accept_synthetic_ids, default_visit_length
    )
    if size > MAX_FILE_BYTES:
        return _failed(ctx, f"file is larger than {MAX_FILE_BYTES} bytes")
    return _read(data, ctx)


def read_text(
    text: str,  # shadows tree.text inside this function only, to keep the documented name
    name: str,
    *,
    timezone: str,
    horizon_start: datetime,
    horizon_end: datetime,
    accept_synthetic_ids: bool,
    default_visit_length: timedelta = DEFAULT_VISIT_LENGTH,
) -> ParsedSource:
    """Read FHIR XML or JSON given as text; `name` is used as the file name in reports."""
    ctx = _context(
        name, timezone, horizon_start, horizon_end, accept_synthetic_ids, default_visit_length
    )
    return _read(text, ctx)


def _context(
    name: str,
    timezone: str,
    horizon_start: datetime,
    horizon_end: datetime,
    accept_synthetic: bool,
    default_visit_length: timedelta,
) -> ReadContext:
    start = require_aware(horizon_start, "horizon start")
    end = require_aware(horizon_end, "horizon end")
    if end <= start:
        raise ValueError("horizon end must be after horizon start")
    if default_visit_length <= timedelta(0):
        raise ValueError("default visit length must be positive")
    return ReadContext(
        file=name,
        zone=ZoneInfo(timezone),
        horizon_start=start,
        horizon_end=end,
        accept_synthetic=accept_synthetic,
        default_duration=default_visit_length,
    )


def _failed(ctx: ReadContext, message: str) -> ParsedSource:
    source = SourceRef(ctx.file, "-", "-")
    return ParsedSource(file=ctx.file, problems=[problem(source, "", message)])


def _parse(data: bytes | str) -> dict[str, Any]:
    """Parse XML or JSON by its first character into the JSON dict shape."""
    if isinstance(data, bytes):
        data = data.removeprefix(b"\xef\xbb\xbf")
        first = data.lstrip(b" \t\r\n")[:1].decode("ascii", "replace")
    else:
        data = data.removeprefix("\ufeff")
        first = data.lstrip(" \t\r\n")[:1]
    if first == "<":
        try:
            # Bytes go to the parser as they are, so that an encoding declaration is honoured.
            return parse_xml(data)
        except DefusedXmlException as exc:
            # DTDs and entities are refused: they are how XML bombs and XXE get in.
            raise _Unparseable(f"XML uses a forbidden construct ({type(exc).__name__})") from exc
        except ParseError as exc:
            raise _Unparseable(f"not well-formed XML ({exc})") from exc
        except NotFhir as exc:
            raise _Unparseable(f"not FHIR: {exc}") from exc
        except (LookupError, ValueError) as exc:
            # An unknown or broken encoding declaration (encoding="klingon").
            raise _Unparseable(f"XML declares an encoding that cannot be read ({type(exc).__name__})") from exc
    if first == "{":
        try:
            parsed = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
            raise _Unparseable(f"not valid JSON ({reason})") from exc
        except RecursionError as exc:
            raise _Unparseable("JSON is nested too deeply") from exc
        except ValueError as exc:  # Python's int-string limit: a number of thousands of digits
            raise _Unparseable("not valid JSON (a number has too many digits)") from exc
        if not isinstance(parsed.get("resourceType"), str):
            raise _Unparseable("not FHIR: JSON object has no resourceType")
        return parsed
    raise _Unparseable("neither XML nor JSON")


def _walk(
    resource: Any, full_url: str | None, position: str
) -> Iterator[tuple[Any, str | None, str]]:
    """Yield (resource, fullUrl, position) for every resource, descending into Bundles."""
    if text(resource, "resourceType") == "Bundle":
        for index, entry in enumerate(items(resource, "entry")):
            inner = one(entry, "resource")
            if isinstance(inner, dict) and text(inner, "resourceType"):
                here = f"{position}.entry[{index}]" if position else f"entry[{index}]"
                yield from _walk(inner, text(entry, "fullUrl"), here)
        return
    yield resource, full_url, position or "root"


# C0 controls and DEL (tab and line breaks are text): PostgreSQL refuses NUL, and none of them
# belongs in a care record. A lone surrogate (JSON "\ud800") cannot even be stored as UTF-8.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)


def _bad_text(node: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a control character, else None."""
    if isinstance(node, str):
        return path if _CONTROL.search(node) else None
    if isinstance(node, dict):
        for key, value in node.items():
            # Name the element as given, unless its name would itself put odd text in the report.
            name = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else "?"
            here = f"{path}.{name}" if path else name
            if not isinstance(key, str) or _CONTROL.search(key):
                return here
            found = _bad_text(value, here)
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _bad_text(value, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _refuse_control_text(resources: list[tuple[Any, str | None, str]], ctx: ReadContext,
                         result: ParsedSource) -> list[tuple[Any, str | None, str]]:
    """Resources with a control character in any string are quarantined, not mapped."""
    kept = []
    for resource, full_url, position in resources:
        field_path = _bad_text(resource)
        if field_path is None:
            kept.append((resource, full_url, position))
            continue
        kind = text(resource, "resourceType") or "?"
        label = resource_label(resource, position)
        if _CONTROL.search(label):
            label = position
        source = SourceRef(ctx.file, kind if not _CONTROL.search(kind) else "?", label)
        # Escaped (ensure_ascii) so the quarantine itself can store it.
        raw = json.dumps(resource, ensure_ascii=True, sort_keys=True, default=str)
        result.problems.append(problem(source, field_path, "contains a control character (such as NUL)", raw=raw))
    return kept


def _read(data: bytes | str, ctx: ReadContext) -> ParsedSource:
    try:
        root = _parse(data)
    except _Unparseable as exc:
        return _failed(ctx, str(exc))
    except RecursionError:
        return _failed(ctx, "document is nested too deeply")
    result = ParsedSource(file=ctx.file)
    resources = _refuse_control_text(list(_walk(root, None, "")), ctx, result)
    # People first, so that plans and appointments can resolve references to them.
    for resource, full_url, position in resources:
        kind = text(resource, "resourceType")
        if kind in ("Patient", "Practitioner"):
            _read_person(resource, kind, full_url, position, ctx, result)
    skipped: set[str] = set()
    for resource, _full_url, position in resources:
        kind = text(resource, "resourceType") or "?"
        source = SourceRef(ctx.file, kind, resource_label(resource, position))
        if kind in ("Patient", "Practitioner"):
            continue
        if kind in ("CarePlan", "Appointment"):
            reader = read_careplan if kind == "CarePlan" else read_appointment
            try:
                record, problems = reader(resource, source, ctx)
            except Exception as exc:  # a mapper bug must not lose the rest of the file
                # No traceback: exception text may quote the input, which can hold national ids.
                LOGGER.error("mapping %s failed (%s)", source, type(exc).__name__)
                message = f"could not be read ({type(exc).__name__})"
                result.problems.append(problem(source, "", message, raw=raw_json(resource)))
                continue
            if record is not None:
                result.plans.append(record)
            result.problems.extend(problems)
        elif kind not in skipped:
            skipped.add(kind)
            note = f"resource type {kind} is not a visit source"
            result.problems.append(problem(source, "", note, Severity.SKIPPED))
    return result


def _read_person(
    resource: Any,
    kind: str,
    full_url: str | None,
    position: str,
    ctx: ReadContext,
    result: ParsedSource,
) -> None:
    """Map a Patient or Practitioner and register it for reference resolution."""
    source = SourceRef(ctx.file, kind, resource_label(resource, position))
    raw = raw_json(resource)
    mapper = read_patient if kind == "Patient" else read_practitioner
    try:
        record: Any = mapper(resource, source, accept_synthetic=ctx.accept_synthetic, raw=raw)
    except Exception as exc:  # a mapper bug must not lose the rest of the file
        LOGGER.error("mapping %s failed (%s)", source, type(exc).__name__)
        message = f"could not be read ({type(exc).__name__})"
        result.problems.append(problem(source, "", message, raw=raw))
        return
    if isinstance(record, list):
        result.problems.extend(record)
        return
    keys = reference_keys(kind, text(resource, "id"), full_url)
    if kind == "Patient":
        result.patients.append(record)
        ctx.patients.update(dict.fromkeys(keys, record))
    else:
        result.practitioners.append(record)
        ctx.practitioners.update(dict.fromkeys(keys, record))
