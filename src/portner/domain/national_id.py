"""Norwegian national identity numbers: fødselsnummer, D-number and synthetic test numbers.

Format DDMMYY III KK: birth date, individual number, two mod-11 check digits.

- D-number: 4 is added to the first day digit (day 41-71).
- Synthetic numbers from the national test registries: 40 is added to the month (H-numbers and
  NAV test numbers) or 80 (Tenor, Skatteetaten's test registry). They are accepted only when the
  caller asks for it (test and demo environments); real data must never contain them.

Century rules: the individual number picks the century (Skatteetaten's allocation table). We use
it only to know the year for the 29 February check; a combination outside the table is not
rejected (test registries do not follow it), and then 29 February is accepted if it exists in any
candidate century. The 2032 scheme (more check-digit values) is not supported yet.

Errors never contain the number itself: they may end up in logs and import reports.
"""

from __future__ import annotations

import calendar
import re
from enum import StrEnum

from portner.domain.errors import InvalidNationalId

_WEIGHTS_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_WEIGHTS_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


class NationalIdKind(StrEnum):
    """What a valid national id number is."""

    FODSELSNUMMER = "fodselsnummer"
    D_NUMBER = "d_number"
    SYNTHETIC = "synthetic"  # from a test registry (month + 40 or + 80), D-number or not


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int | None:
    """Return the mod-11 check digit for `digits`, or None when no digit is possible (10)."""
    remainder = sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
    check = 11 - remainder
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def check_digits(first_nine: str) -> str | None:
    """Return the two check digits for a nine-digit prefix, or None if the prefix has none."""
    digits = [int(c) for c in first_nine]
    k1 = _check_digit(digits, _WEIGHTS_K1)
    if k1 is None:
        return None
    k2 = _check_digit([*digits, k1], _WEIGHTS_K2)
    if k2 is None:
        return None
    return f"{k1}{k2}"


def _candidate_years(yy: int, individual: int) -> list[int]:
    """Return the full birth years the individual number allows (Skatteetaten's table)."""
    if individual <= 499:
        return [1900 + yy]
    if individual <= 749 and yy >= 54:
        return [1800 + yy]
    if yy <= 39:
        return [2000 + yy]
    if individual >= 900:
        return [1900 + yy]
    # Outside the allocation table (e.g. 750-899 with year 40-99): not rejected, see module doc.
    return [1900 + yy, 2000 + yy]


def _check_date(day: int, month: int, yy: int, individual: int) -> None:
    """Raise unless day/month form a real date in one of the candidate years."""
    if not 1 <= month <= 12:
        raise InvalidNationalId("month part is not a valid month")
    if day < 1 or day > 31:
        raise InvalidNationalId("day part is not a valid day")
    years = _candidate_years(yy, individual)
    if not any(day <= calendar.monthrange(year, month)[1] for year in years):
        raise InvalidNationalId("date part is not a real date")


def validate_national_id(value: str, *, accept_synthetic: bool = False) -> NationalIdKind:
    """Check a fødselsnummer or D-number and say which kind it is; raise InvalidNationalId."""
    number = value.strip()  # surrounding whitespace is a formatting slip, not a different number
    if not number.isdigit() or not number.isascii():
        raise InvalidNationalId("must contain only the digits 0-9")
    if len(number) != 11:
        raise InvalidNationalId(f"must be 11 digits, got {len(number)}")
    if check_digits(number[:9]) != number[9:]:
        raise InvalidNationalId("check digit mismatch")

    day = int(number[0:2])
    month = int(number[2:4])
    yy = int(number[4:6])
    individual = int(number[6:9])

    d_number = day > 40
    if d_number:
        day -= 40
    synthetic = month > 40
    if month > 80:
        month -= 80
    elif month > 40:
        month -= 40
    _check_date(day, month, yy, individual)

    if synthetic:
        if not accept_synthetic:
            raise InvalidNationalId("synthetic test number not accepted")
        return NationalIdKind.SYNTHETIC
    return NationalIdKind.D_NUMBER if d_number else NationalIdKind.FODSELSNUMMER


def mask(value: str) -> str:
    """Return a placeholder for `value` that reveals nothing but its length."""
    return "*" * len(value)


# Eleven digits standing alone, also as people write a national id: the birth date, then a
# space, dot or hyphen, then the personal number ("010170 12345").
_ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{6}[ .-]?\d{5}(?!\d)")


def redact_national_ids(text: str) -> str:
    """Replace every standalone 11-digit run in `text` with asterisks (it may be a national id)."""
    return _ELEVEN_DIGITS.sub("*" * 11, text)
