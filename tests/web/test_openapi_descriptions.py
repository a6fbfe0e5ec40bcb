"""The OpenAPI document describes every operation for the integrators who read it.

Care-record vendors, lock gateway makers and municipal IT build against /openapi.json: each
operation says in plain words what it does, who may call it and what to send along (an
Idempotency-Key, If-Match). The text comes from the route's docstring or its `description=`; a
developer's note (a TODO, a module path) belongs in a comment, not in the public document.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
SHORTEST = 20
# What gives a developer's note away: markers, linter and type-checker comments, this code's
# own module paths (services.door_events, portner.web.api, ...). Scopes (portner.fhir.import)
# are public names.
INTERNAL = re.compile(
    r"\b(TODO|XXX|FIXME|HACK)\b|\bnoqa\b|\bpragma\b|type: ignore"
    r"|\b(portner\.)?(services|storage|web|domain)\.[a-z_]+"
)


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): operation for path, item in doc["paths"].items()
            for method, operation in item.items() if method in METHODS}


def test_every_openapi_operation_has_a_description_for_integrators(portner_app: FastAPI) -> None:
    operations = _operations(TestClient(portner_app).get("/openapi.json").json())
    assert len(operations) > 50  # the whole API, not an empty document
    missing = sorted(f"{method.upper()} {path}" for (path, method), operation in operations.items()
                     if len((operation.get("description") or "").strip()) < SHORTEST)
    assert not missing, f"{len(missing)} operations without a description of {SHORTEST}+ characters: {missing}"


def test_no_openapi_description_reads_like_an_internal_note(portner_app: FastAPI) -> None:
    operations = _operations(TestClient(portner_app).get("/openapi.json").json())
    notes = {f"{method.upper()} {path}": found.group(0)
             for (path, method), operation in operations.items()
             if (found := INTERNAL.search(operation.get("description") or ""))}
    assert not notes, notes


def test_the_internal_note_check_catches_what_it_should() -> None:
    for note in ("TODO: page this", "XXX slow", "see services.door_events", "# noqa: B018",
                 "(web.api.common)", "portner.web.deps", "type: ignore[arg-type]"):
        assert INTERNAL.search(note), note
    for public in ("Operators and administrators only.", "Send If-Match with the ETag of a GET.",
                   "Idempotent: a retry with the same Idempotency-Key gets the stored answer.",
                   "Integrations with the portner.fhir.import scope."):
        assert not INTERNAL.search(public), public
