"""Keypad code rules: validation, weak codes, common rules, the generator, use limits, slots."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portner.domain.errors import PortnerError
from portner.locks import codes
from portner.locks.codes import (
    CapacityUnknown,
    InvalidCode,
    InvalidMaxUses,
    InvalidSlot,
    LockFull,
    NoCodeAvailable,
    NoCommonRule,
    allocate_slot,
    check_code,
    choose_length,
    common_rules,
    generate_code,
    normalise_max_uses,
    require_code,
    validate_slot,
    weakness,
)
from portner.locks.port import CodeRules, KeypadCode, Refusal, SlotRange

NUKI = CodeRules(lengths=frozenset({6}), alphabet="123456789", forbidden_prefixes=("12",))
TTLOCK = CodeRules(lengths=frozenset({6}), alphabet="1234567")


# --- check_code -----------------------------------------------------------------------------------


def test_reasons_name_the_rule() -> None:
    assert check_code(CodeRules(lengths=frozenset({6})), "1234") == "lock requires 6 digits"
    assert check_code(CodeRules(lengths=frozenset(range(4, 9))), "123") == (
        "lock requires 4 to 8 digits"
    )
    assert (
        check_code(CodeRules(lengths=frozenset({4, 6})), "12345") == "lock requires 4 or 6 digits"
    )
    assert check_code(TTLOCK, "357468") == "uses a key this keypad does not have (it has 1234567)"
    assert check_code(NUKI, "125793") == "starts with a prefix this lock forbids (12)"
    assert check_code(None, "111111") == "too weak: repeated digits"
    assert check_code(None, "1234a6") == "uses a key this keypad does not have (it has 0123456789)"


def test_reasons_never_show_a_character_of_the_code() -> None:
    for rules, code in [(TTLOCK, "357468"), (NUKI, "125793"), (None, "98a765")]:
        reason = check_code(rules, code)
        assert reason is not None
        assert "8" not in reason.replace("123456789", "").replace("0123456789", "")


def test_accepts_good_codes_and_takes_wrapped_codes() -> None:
    assert check_code(NUKI, "334455") is None
    assert check_code(NUKI, KeypadCode("334455")) is None
    assert check_code(NUKI, KeypadCode("123456")) == "starts with a prefix this lock forbids (12)"


def test_unknown_lengths_are_not_checked_but_weakness_still_is() -> None:
    # F8: no reported lengths (None, empty, or {0}) is "unknown", never "none allowed".
    for rules in (
        None,
        CodeRules(),
        CodeRules(lengths=frozenset()),
        CodeRules(lengths=frozenset({0})),
    ):
        assert check_code(rules, "73915") is None
        assert check_code(rules, "7391548206") is None
        assert check_code(rules, "123") == "too weak: fewer than 4 digits"


def test_bad_inputs_get_reasons_not_crashes() -> None:
    assert check_code(None, "") == "a code must not be empty"
    assert check_code(None, 123456) == "a code must be a string of digits"  # type: ignore[arg-type]


def test_weak_filter_can_be_switched_off_per_lock() -> None:
    assert check_code(CodeRules(lengths=frozenset({4}), reject_weak=False), "0000") is None


def test_require_code_raises_a_permanent_bad_code_error() -> None:
    with pytest.raises(InvalidCode, match="lock requires 6 digits") as caught:
        require_code(NUKI, "4711")
    assert caught.value.refusal is Refusal.BAD_CODE and caught.value.refusal.permanent
    assert require_code(NUKI, "334455") == KeypadCode("334455")


def test_reasons_never_contain_the_code() -> None:
    for digits in ("987654", "5555", "12589", "102938", "4711"):
        for rules in (NUKI, TTLOCK, None, CodeRules(lengths=frozenset({4}))):
            reason = check_code(rules, digits)
            assert reason is None or digits not in reason


# --- the weak filter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "reason"),
    [
        ("111111", "too weak: repeated digits"),
        ("0000", "too weak: repeated digits"),
        ("123456", "too weak: a sequence"),
        ("654321", "too weak: a sequence"),
        ("234567", "too weak: a sequence"),
        ("890123", "too weak: a sequence"),  # wraps round the keypad
        ("2468", "too weak: a sequence"),
        ("123123", "too weak: a repeating pattern"),
        ("121212", "too weak: a repeating pattern"),
        ("1212", "too weak: a repeating pattern"),
        ("12341234", "too weak: a repeating pattern"),
        ("111222", "too weak: too few different digits"),
        ("007700", "too weak: too few different digits"),
        ("0123", "too weak: a sequence"),
        ("2580", "too weak: a common PIN"),
        ("1004", "too weak: a common PIN"),
        ("159753", "too weak: a common PIN"),
    ],
)
def test_weak_codes(digits: str, reason: str) -> None:
    assert weakness(digits) == reason


@pytest.mark.parametrize("digits", ["334455", "7302", "918273", "4711", "0852913"])
def test_ordinary_codes_are_not_weak(digits: str) -> None:
    assert weakness(digits) is None


def test_common_pin_list_holds_only_what_the_rules_miss() -> None:
    # The list is for codes the structural rules cannot see; anything else in it is dead weight.
    saved = codes.COMMON_PINS
    try:
        codes.COMMON_PINS = frozenset()
        assert sorted(pin for pin in saved if weakness(pin) is not None) == []
    finally:
        codes.COMMON_PINS = saved


# --- common_rules ---------------------------------------------------------------------------------


def test_common_rules_intersects_and_unites() -> None:
    door = CodeRules(lengths=frozenset({4, 6, 8}), alphabet="0123456789", forbidden_prefixes=("9",))
    result = common_rules([NUKI, door, None])
    assert result.lengths == frozenset({6})
    assert result.alphabet == "123456789"
    assert result.forbidden_prefixes == ("12", "9")
    assert result.reject_weak


def test_common_rules_drops_prefixes_implied_by_shorter_ones() -> None:
    result = common_rules(
        [CodeRules(forbidden_prefixes=("12",)), CodeRules(forbidden_prefixes=("1",))]
    )
    assert result.forbidden_prefixes == ("1",)


def test_unknown_lengths_constrain_nothing() -> None:
    assert common_rules([None, CodeRules()]).lengths is None
    assert common_rules([CodeRules(lengths=frozenset()), TTLOCK]).lengths == frozenset({6})


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [CodeRules(lengths=frozenset({4})), CodeRules(lengths=frozenset({6}))],
            "4 digits.*6 digits",
        ),
        ([CodeRules(alphabet="123"), CodeRules(alphabet="789")], "share no digit"),
        ([CodeRules(alphabet="12", forbidden_prefixes=("1", "2"))], "prefixes exclude every code"),
        ([], "at least one lock"),
    ],
)
def test_common_rules_refuses_the_impossible(rules: list[CodeRules], message: str) -> None:
    with pytest.raises(NoCommonRule, match=message):
        common_rules(rules)


rules_strategy = st.builds(
    CodeRules,
    lengths=st.one_of(st.none(), st.frozensets(st.integers(4, 9), min_size=1, max_size=4)),
    alphabet=st.sampled_from(["0123456789", "123456789", "1234567", "0123456", "13579024"]),
    forbidden_prefixes=st.lists(st.text("0123456789", min_size=1, max_size=2), max_size=2).map(
        tuple
    ),
    reject_weak=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.none(), rules_strategy), min_size=1, max_size=4),
    st.text("0123456789", min_size=4, max_size=9),
)
def test_common_rules_is_at_least_as_strict_as_each_lock(
    rules: list[CodeRules | None], digits: str
) -> None:
    try:
        common = common_rules(rules)
    except NoCommonRule:
        return
    if check_code(common, digits) is None:
        for own in rules:
            assert check_code(own, digits) is None


# --- generate_code --------------------------------------------------------------------------------


def test_length_policy_prefers_six() -> None:
    assert choose_length(CodeRules()) == 6
    assert choose_length(CodeRules(lengths=frozenset(range(4, 9)))) == 6
    assert choose_length(CodeRules(lengths=frozenset({4, 8}))) == 8
    assert choose_length(CodeRules(lengths=frozenset({4, 5}))) == 5
    assert choose_length(CodeRules(lengths=frozenset({4}))) == 4


@settings(max_examples=200, deadline=None)
@given(rules_strategy, st.integers(0, 2**32))
def test_generated_codes_always_pass_check_code(rules: CodeRules, seed: int) -> None:
    try:
        code = generate_code(rules, random.Random(seed))
    except (NoCommonRule, NoCodeAvailable):
        return
    assert check_code(rules, code) is None
    assert len(code) == choose_length(rules)


def test_generator_avoids_codes_on_the_lock_and_their_prefixes() -> None:
    rules = CodeRules(lengths=frozenset({4}), alphabet="1234", reject_weak=False)
    taken = {f"{a}{b}{c}{d}" for a in "1234" for b in "1234" for c in "1234" for d in "1234"}
    keep = "3142"
    taken.discard(keep)
    assert generate_code(rules, random.Random(1), avoid=taken).reveal() == keep
    with pytest.raises(NoCodeAvailable, match="already on the lock"):
        generate_code(rules, random.Random(1), avoid=taken | {keep})
    # A code that begins another would open for it on locks without an enter key.
    rules_any = CodeRules(lengths=frozenset({4, 6}), alphabet="1234", reject_weak=False)
    for seed in range(50):
        code = generate_code(rules_any, random.Random(seed), avoid={KeypadCode("3142")}).reveal()
        assert not code.startswith("3142")


def test_generator_is_roughly_uniform() -> None:
    rules = CodeRules(lengths=frozenset({4}), alphabet="1234567")
    rng = random.Random(7)
    first_digits = [generate_code(rules, rng).reveal()[0] for _ in range(7000)]
    counts = [first_digits.count(d) for d in "1234567"]
    assert min(counts) > 850 and max(counts) < 1150  # expected 1000 each


def test_generator_works_with_system_random_and_hides_the_code() -> None:
    import secrets

    code = generate_code(NUKI, secrets.SystemRandom())
    assert check_code(NUKI, code) is None
    assert "*" * 6 in repr(code) and code.reveal() not in repr(code)


# --- max uses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2), (2.0, 2), ("2", 2), (" 3 ", 3), ("2.0", 2), (Decimal("4"), 4), (None, None)],
)
def test_max_uses_normalised(value: object, expected: int | None) -> None:
    assert normalise_max_uses(value) == expected


@pytest.mark.parametrize(
    "value", [2.5, "two", True, False, 0, -1, "0", "-1", float("nan"), float("inf"), [2], "2.5", ""]
)
def test_max_uses_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidMaxUses, match="max_uses"):
        normalise_max_uses(value)
    with pytest.raises(ValueError, match="uses_left"):
        normalise_max_uses(value, field="uses_left")


# --- slots ----------------------------------------------------------------------------------------


def test_validate_slot() -> None:
    thirty = SlotRange(30)
    assert validate_slot(thirty, 30) == 30
    with pytest.raises(InvalidSlot, match="this lock has 30 slots") as caught:
        validate_slot(thirty, 31)
    assert caught.value.refusal is Refusal.SLOT_OUT_OF_RANGE
    for bad in (0, -3, True, "5", 2.0):
        with pytest.raises(InvalidSlot):
            validate_slot(thirty, bad)  # type: ignore[arg-type]
    # Unknown capacity (absent, or a reported 0): only the lower bound is checked (F8).
    assert validate_slot(None, 250) == 250
    assert validate_slot(SlotRange(0), 7) == 7


def test_allocate_takes_the_lowest_usable_slot() -> None:
    assert allocate_slot(SlotRange(5), set(), set(), set()) == 1
    assert allocate_slot(SlotRange(5), {1, 2}, {3}, {4}) == 5


def test_allocate_reports_why_the_lock_is_full() -> None:
    with pytest.raises(LockFull, match=r"all 4 slots .*2 in use, 1 quarantined, 1 unreadable") as e:
        allocate_slot(SlotRange(4), {1, 2, 40}, {3}, {4})
    assert e.value.refusal is Refusal.LOCK_FULL and isinstance(e.value, PortnerError)


def test_allocate_refuses_unknown_capacity() -> None:
    for slots in (None, SlotRange(0)):
        with pytest.raises(CapacityUnknown, match="did not report how many slots"):
            allocate_slot(slots, set(), set(), set())


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40),
    st.sets(st.integers(1, 45)),
    st.sets(st.integers(1, 45)),
    st.sets(st.integers(1, 45)),
)
def test_allocation_never_lands_on_a_blocked_slot(
    count: int, taken: set[int], quarantined: set[int], unreadable: set[int]
) -> None:
    blocked = taken | quarantined | unreadable
    try:
        slot = allocate_slot(SlotRange(count), taken, quarantined, unreadable)
    except LockFull:
        assert set(range(1, count + 1)) <= blocked
        return
    assert 1 <= slot <= count and slot not in blocked
    assert all(s in blocked for s in range(1, slot))


def test_codes_are_digits_even_on_a_keypad_with_star_and_hash() -> None:
    rules = CodeRules(lengths=frozenset({6}), alphabet="0123456789*#")
    rng = random.Random(3)
    codes = [generate_code(rules, rng).reveal() for _ in range(300)]
    assert all(code.isdigit() and len(code) == 6 for code in codes)
    with pytest.raises(NoCommonRule):
        generate_code(CodeRules(alphabet="*#"), rng)


def test_a_use_limit_has_an_upper_bound() -> None:
    assert normalise_max_uses(10_000) == 10_000
    for value in (10_001, 10**30, "99999999999999999999999"):
        with pytest.raises(InvalidMaxUses, match="at most 10000"):
            normalise_max_uses(value)
