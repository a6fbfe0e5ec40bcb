"""What the API's binary fields and ids look like on the wire (shared by the phone's routes)."""

from __future__ import annotations

import base64
import binascii

from portner.web.problems import field_problem

# Ids are printable ASCII: anything else is refused before it reaches a query.
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(value: str, field: str) -> bytes:
    try:
        if not value or any(c in value for c in "+/= \n"):
            raise ValueError
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise field_problem(field, "must be unpadded base64url") from None
