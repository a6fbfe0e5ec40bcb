"""Fødselsnummer, D-number and synthetic test number validation."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from portner.domain.errors import InvalidNationalId
from portner.domain.national_id import (
    NationalIdKind,
    check_digits,
    mask,
    redact_national_ids,
    validate_national_id,
)


def with_check_digits(nine: str) -> str | None:
    """Independent reference implementation of the two mod-11 check digits."""
    digits = [int(c) for c in nine]
    k1 = 11 - sum(d * w for d, w in zip(digits, (3, 7, 6, 1, 8, 9, 4, 5, 2))) % 11
    k1 = 0 if k1 == 11 else k1
    if k1 == 10:
        return None
    digits.append(k1)
    k2 = 11 - sum(d * w for d, w in zip(digits, (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))) % 11
    k2 = 0 if k2 == 11 else k2
    if k2 == 10:
        return None
    return f"{nine}{k1}{k2}"


def make(day: int, month: int, yy: int, individual: int) -> str:
    """Build a valid number, trying the next individual numbers until check digits exist."""
    for ind in range(individual, individual + 40):
        number = with_check_digits(f"{day:02d}{month:02d}{yy:02d}{ind % 1000:03d}")
        if number is not None:
            return number
    raise AssertionError("no valid individual number found")


# Fictitious test persons from the HL7 Norway examples (valid check digits).
KNOWN_VALID = ["01014549834", "05073500186", "21030550231", "11079500412", "04056600324"]


@pytest.mark.parametrize("number", KNOWN_VALID)
def test_known_valid_fodselsnummer(number: str) -> None:
    assert validate_national_id(number) is NationalIdKind.FODSELSNUMMER


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("3344566778", "must be 11 digits, got 10"),
        ("011014549834", "must be 11 digits, got 12"),
        ("", "must contain only the digits 0-9"),
        ("0101454983x", "must contain only the digits 0-9"),
        ("0101454983٤", "must contain only the digits 0-9"),  # Arabic-Indic digit: not ASCII
        ("11223112233", "check digit mismatch"),
        ("01017012345", "check digit mismatch"),
        ("23048000000", "check digit mismatch"),
    ],
)
def test_invalid_numbers_give_a_reason_without_the_number(number: str, reason: str) -> None:
    with pytest.raises(InvalidNationalId) as caught:
        validate_national_id(number)
    assert str(caught.value) == reason
    if number:
        assert number not in str(caught.value)


def test_surrounding_whitespace_is_tolerated() -> None:
    assert validate_national_id(" 01014549834 ") is NationalIdKind.FODSELSNUMMER


def test_d_number_adds_four_to_the_first_digit() -> None:
    number = make(41, 1, 45, 498)  # day 01 + 40
    assert validate_national_id(number) is NationalIdKind.D_NUMBER


@pytest.mark.parametrize(
    ("day", "month", "yy", "individual", "reason"),
    [
        (32, 1, 80, 100, "day part is not a valid day"),
        (0, 1, 80, 100, "day part is not a valid day"),
        (1, 13, 80, 100, "month part is not a valid month"),
        (31, 4, 80, 100, "date part is not a real date"),  # 31 April
        (29, 2, 81, 100, "date part is not a real date"),  # 1981 is not a leap year
        (29, 2, 0, 100, "date part is not a real date"),  # individual < 500: 1900, not leap
        (72, 1, 80, 100, "day part is not a valid day"),  # D-number with day 32
    ],
)
def test_date_part_must_be_a_real_date(
    day: int, month: int, yy: int, individual: int, reason: str
) -> None:
    number = make(day, month, yy, individual)
    with pytest.raises(InvalidNationalId, match=reason):
        validate_national_id(number)


def test_leap_day_follows_the_century_from_the_individual_number() -> None:
    # yy 00 with individual 500-999 is 2000, a leap year; with 000-499 it is 1900, not one.
    assert validate_national_id(make(29, 2, 0, 500)) is NationalIdKind.FODSELSNUMMER
    assert validate_national_id(make(29, 2, 84, 100)) is NationalIdKind.FODSELSNUMMER


@pytest.mark.parametrize("offset", [40, 80])
def test_synthetic_numbers_only_when_accepted(offset: int) -> None:
    number = make(15, 6 + offset, 90, 123)
    with pytest.raises(InvalidNationalId, match="synthetic test number not accepted"):
        validate_national_id(number)
    assert validate_national_id(number, accept_synthetic=True) is NationalIdKind.SYNTHETIC


def test_synthetic_d_number_is_synthetic() -> None:
    number = make(55, 3 + 80, 90, 123)
    assert validate_national_id(number, accept_synthetic=True) is NationalIdKind.SYNTHETIC


def test_synthetic_month_must_still_be_a_month() -> None:
    number = make(15, 13 + 80, 90, 123)
    with pytest.raises(InvalidNationalId, match="month part is not a valid month"):
        validate_national_id(number, accept_synthetic=True)


@pytest.mark.parametrize("nine", ["010145498", "050735001", "123456789", "000000000", "010145402"])
def test_check_digits_agree_with_the_reference(nine: str) -> None:
    # 010145402 has no valid check digit (remainder 10): None, like the reference.
    expected = with_check_digits(nine)
    assert check_digits(nine) == (expected[9:] if expected else None)


def test_mask_reveals_only_the_length() -> None:
    assert mask("01014549834") == "***********"
    assert mask("3344566778") == "**********"


@st.composite
def valid_numbers(draw: st.DrawFn) -> str:
    """Real-format numbers (any kind) with correct check digits."""
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2039, 12, 31)))
    individual = draw(st.integers(0, 499)) if born.year < 2000 else draw(st.integers(500, 999))
    day = born.day + draw(st.sampled_from([0, 40]))
    month = born.month + draw(st.sampled_from([0, 40, 80]))
    number = with_check_digits(f"{day:02d}{month:02d}{born.year % 100:02d}{individual:03d}")
    assume(number is not None)
    assert number is not None
    return number


@settings(max_examples=150, deadline=None)
@given(number=valid_numbers(), data=st.data())
def test_any_single_digit_change_is_rejected(number: str, data: st.DataObject) -> None:
    validate_national_id(number, accept_synthetic=True)  # the generator makes valid numbers
    position = data.draw(st.integers(0, 10))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != number[position]]))
    changed = number[:position] + digit + number[position + 1 :]
    with pytest.raises(InvalidNationalId) as caught:
        validate_national_id(changed, accept_synthetic=True)
    assert changed not in str(caught.value)


def test_redaction_also_catches_an_id_written_with_a_separator() -> None:
    # As people write one: birth date, a space (or dot, or hyphen), personal number.
    for written in ("010170 12345", "010170-12345", "010170.12345", "01017012345"):
        assert redact_national_ids(f"id {written} here") == "id *********** here"
    # ...but not longer digit runs, nor dates and times beside other numbers.
    for kept in ("0101701234567", "2026-12-04 07:31:03", "tel 12345678"):
        assert redact_national_ids(kept) == kept
