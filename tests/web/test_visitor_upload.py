"""A one-time visitor's phone uploads door events with its link as authority, and only then."""

from __future__ import annotations


def test_an_unknown_or_unredeemed_link_uploads_nothing(client_for) -> None:
    anonymous = client_for(None)
    body = {"uploads": [{"lock_id": "l-000001", "events": []}]}
    answer = anonymous.post("/api/v1/visit/" + "A" * 43 + "/door-events", json=body)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    # A malformed token never reaches the store.
    assert anonymous.post("/api/v1/visit/bad%20token!/door-events", json=body).status_code == 422
