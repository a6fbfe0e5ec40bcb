"""Pure rules for keypad codes and code slots: validation, the weak-code filter, the tightest rule
common to a door path, the generator, use-count limits and slot allocation.

Everything here is decided before any radio traffic: a code a lock cannot take, or a slot it does
not have, is refused with a reason a person can act on (F3, F4, F7, F24), and unknown lock
capabilities are treated as unknown, never as "nothing allowed" (F8).

Messages never contain a whole code. A reason may name the one offending digit or a forbidden
prefix, because that is a property of the rule, not of the secret.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from decimal import Decimal

from portner.domain.errors import PortnerError
from portner.locks.port import CodeRules, KeypadCode, Refusal, SlotRange

__all__ = [
    "COMMON_PINS",
    "CapacityUnknown",
    "CodeRuleError",
    "InvalidCode",
    "InvalidMaxUses",
    "InvalidSlot",
    "LockFull",
    "MIN_CODE_LENGTH",
    "NoCodeAvailable",
    "NoCommonRule",
    "PREFERRED_LENGTH",
    "allocate_slot",
    "check_code",
    "choose_length",
    "common_rules",
    "generate_code",
    "normalise_max_uses",
    "require_code",
    "validate_slot",
    "weakness",
]

# --- errors ---------------------------------------------------------------------------------------


class CodeRuleError(PortnerError, ValueError):
    """A code, a rule or a slot broke a lock's rules. `refusal` is how the reconciler files it: all
    of these are permanent (retrying the same input cannot help)."""

    refusal: Refusal = Refusal.BAD_CODE


class InvalidCode(CodeRuleError):
    """A code the lock (or the door path) would not accept; the message is the rule it broke."""


class NoCommonRule(CodeRuleError):
    """No code can satisfy every lock of a door path (for example lengths {4} and {6})."""


class NoCodeAvailable(CodeRuleError):
    """The rules allow codes, but none is left once weak and already-used codes are excluded."""


class InvalidSlot(CodeRuleError):
    """An explicit slot outside the lock's range (F7: the message names the capacity)."""

    refusal = Refusal.SLOT_OUT_OF_RANGE


class LockFull(PortnerError):
    """Every slot of the lock is taken, quarantined or unreadable."""

    refusal = Refusal.LOCK_FULL


class CapacityUnknown(PortnerError):
    """The lock did not report its slots, so a free one cannot be chosen (F8: unknown is not 0)."""

    refusal = Refusal.NOT_SUPPORTED


class InvalidMaxUses(PortnerError, ValueError):
    """A use-count limit that is not a positive whole number (F1)."""


# --- the weak-code filter -------------------------------------------------------------------------

# Shorter codes are guessable within a keypad's lockout budget; no lock profile we know needs them.
MIN_CODE_LENGTH = 4

# Codes that top every published PIN-frequency study (DataGenetics' 3.4 million 4-digit PINs, the
# 6-digit lists from leaked databases) but that the structural rules below do not already catch:
# keypad shapes (2580 is the middle column, 0852 the same upwards, 147258 two columns, 159753 the
# diagonals), and popular "words" and years (1004, 2000). The structural rules catch 1234, 1111,
# 1212, 6969, 123456, 121212, 123123 and so on, so they are not repeated here (a test checks).
COMMON_PINS = frozenset({
    # 4 digits
    "1004", "2000", "2001", "1122", "2580", "0852", "1379", "1397", "3690", "0963", "1998", "1999",
    # 6 digits
    "112233", "123321", "123654", "147258", "258369", "159753", "159357", "789456", "102030",
    "292513", "963852", "147852",
})


def weakness(digits: str) -> str | None:
    """Return why `digits` is too weak, or None. The rules, in order:

    1. fewer than MIN_CODE_LENGTH characters;
    2. one character repeated (111111);
    3. a constant step between neighbours, modulo 10 (123456, 654321, 234567, 890123, 2468);
    4. a repeating block at most half the code long (1212, 121212, 123123, 12341234);
    5. too little variety: fewer than 3 different characters in a code of 6 or more (111222);
    6. a well-known common PIN (COMMON_PINS).
    """
    n = len(digits)
    if n < MIN_CODE_LENGTH:
        return f"too weak: fewer than {MIN_CODE_LENGTH} digits"
    if len(set(digits)) == 1:
        return "too weak: repeated digits"
    if digits.isdigit():
        steps = {(int(b) - int(a)) % 10 for a, b in zip(digits, digits[1:], strict=False)}
        if len(steps) == 1:
            return "too weak: a sequence"
    for period in range(1, n // 2 + 1):
        if all(digits[i] == digits[i - period] for i in range(period, n)):
            return "too weak: a repeating pattern"
    if n >= 6 and len(set(digits)) < 3:
        return "too weak: too few different digits"
    if digits in COMMON_PINS:
        return "too weak: a common PIN"
    return None


# --- checking one code ----------------------------------------------------------------------------

_DEFAULT_RULES = CodeRules()


def _known_lengths(rules: CodeRules) -> frozenset[int] | None:
    """The lock's exact lengths, or None when unknown. An empty or non-positive set is how some
    locks say "I did not tell you" (F8), so it counts as unknown rather than as "no length"."""
    if not rules.lengths:
        return None
    # No keypad takes codes longer than MAX_CODE_LENGTH; a larger figure is a lock's nonsense, and
    # must not make the generator count through astronomically many codes.
    lengths = frozenset(n for n in rules.lengths if isinstance(n, int) and 0 < n <= MAX_CODE_LENGTH)
    return lengths or None


def _describe_lengths(lengths: frozenset[int]) -> str:
    ordered = sorted(lengths)
    if len(ordered) == 1:
        return f"{ordered[0]} digits"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]} to {ordered[-1]} digits"
    return ", ".join(str(n) for n in ordered[:-1]) + f" or {ordered[-1]} digits"


def check_code(rules: CodeRules | None, digits: str | KeypadCode) -> str | None:
    """Return None when the lock(s) described by `rules` accept `digits`, else the rule it breaks
    ("lock requires 6 digits", "uses a key this keypad does not have (it has 1234567)",
    "starts with a prefix this lock forbids (12)",
    "too weak: repeated digits"). `rules` None means the lock told us nothing: lengths are then not
    checked, but the code must still be digits and not weak."""
    if isinstance(digits, KeypadCode):
        digits = digits.reveal()
    if not isinstance(digits, str):
        return "a code must be a string of digits"
    if not digits:
        return "a code must not be empty"
    rules = rules or _DEFAULT_RULES
    lengths = _known_lengths(rules)
    if lengths is not None and len(digits) not in lengths:
        return f"lock requires {_describe_lengths(lengths)}"
    # The reasons name the rule, never a character of the code: they reach logs and alarms.
    if any(char not in rules.alphabet for char in digits):
        return f"uses a key this keypad does not have (it has {rules.alphabet})"
    if any(prefix and digits.startswith(prefix) for prefix in rules.forbidden_prefixes):
        return "starts with a prefix this lock forbids (" + ", ".join(rules.forbidden_prefixes) + ")"
    if rules.reject_weak:
        return weakness(digits)
    return None


def require_code(rules: CodeRules | None, digits: str | KeypadCode) -> KeypadCode:
    """Return the code wrapped, or raise InvalidCode with the rule it breaks."""
    reason = check_code(rules, digits)
    if reason is not None:
        raise InvalidCode(reason)
    return digits if isinstance(digits, KeypadCode) else KeypadCode(digits)


# --- the tightest rule over a door path -----------------------------------------------------------


def _minimal_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Drop empty prefixes and those implied by a shorter one ("12" is implied by "1")."""
    kept: list[str] = []
    for prefix in sorted(set(p for p in prefixes if p), key=lambda p: (len(p), p)):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return tuple(sorted(kept))


def _prefix_free_count(alphabet: str, prefixes: Sequence[str], length: int) -> int:
    """How many strings of `length` over `alphabet` start with none of `prefixes`. Minimal
    prefixes match disjoint sets, so their counts subtract without double counting."""
    size = len(alphabet)
    total = size**length
    for prefix in _minimal_prefixes(prefixes):
        if len(prefix) <= length and all(c in alphabet for c in prefix):
            total -= size ** (length - len(prefix))
    return total


def common_rules(rules: Sequence[CodeRules | None]) -> CodeRules:
    """The tightest rule every lock of a door path accepts: the lengths all of them accept, the
    characters all their keypads have, every lock's forbidden prefixes, and the weak filter if any
    lock asks for it (it is on for unknown locks). A None entry (or unknown lengths) constrains
    nothing it did not report. Raises NoCommonRule when no code could satisfy them all."""
    if not rules:
        raise NoCommonRule("a door path needs at least one lock to have code rules")
    known = [r or _DEFAULT_RULES for r in rules]
    lengths: frozenset[int] | None = None
    for r in known:
        own = _known_lengths(r)
        if own is not None:
            if lengths is not None and not (lengths & own):
                raise NoCommonRule(
                    f"no code fits every lock: one requires {_describe_lengths(lengths)}, "
                    f"another {_describe_lengths(own)}"
                )
            lengths = own if lengths is None else lengths & own
    alphabet = known[0].alphabet
    for r in known[1:]:
        alphabet = "".join(c for c in alphabet if c in r.alphabet)
    alphabet = "".join(dict.fromkeys(alphabet))  # each character once, in the first lock's order
    if not alphabet:
        raise NoCommonRule("no code fits every lock: their keypads share no digit")
    prefixes = _minimal_prefixes(p for r in known for p in r.forbidden_prefixes)
    result = CodeRules(
        lengths=lengths,
        alphabet=alphabet,
        forbidden_prefixes=prefixes,
        reject_weak=any(r.reject_weak for r in known),
    )
    candidates = sorted(lengths) if lengths is not None else [PREFERRED_LENGTH]
    if all(_prefix_free_count(alphabet, prefixes, n) == 0 for n in candidates):
        raise NoCommonRule("no code fits every lock: their forbidden prefixes exclude every code")
    return result


# --- generating a code ----------------------------------------------------------------------------

# Six digits: a million codes, against a keypad's lockout after a few wrong tries, and still easy
# for a nurse or a relative to key in. Longer only when a lock allows nothing shorter.
PREFERRED_LENGTH = 6
# Rejection sampling stops after this many tries; with the filters above even a 4-digit keypad of
# 7 keys keeps most codes, so hitting the limit means the space is truly (nearly) used up.
_MAX_TRIES = 20_000


MAX_USES_LIMIT = 10_000
MAX_CODE_LENGTH = 16
DIGITS = "0123456789"


def choose_length(rules: CodeRules) -> int:
    """The length the generator uses: PREFERRED_LENGTH when allowed (or when the lock did not
    say); else the shortest allowed length above it; else the longest allowed below it. Lengths
    that forbidden prefixes or the weak filter's minimum rule out entirely are passed over."""
    lengths = _known_lengths(rules)
    if lengths is None:
        return PREFERRED_LENGTH
    above = sorted(n for n in lengths if n >= PREFERRED_LENGTH)
    below = sorted((n for n in lengths if n < PREFERRED_LENGTH), reverse=True)
    for n in above + below:
        if rules.reject_weak and n < MIN_CODE_LENGTH:
            continue
        if _prefix_free_count(rules.alphabet, rules.forbidden_prefixes, n) > 0:
            return n
    raise NoCommonRule(f"no code of {_describe_lengths(lengths)} satisfies these rules")


def _shadows(candidate: str, taken: Collection[str]) -> str | None:
    for other in taken:
        if other == candidate:
            return "already on this lock"
        # On keypads that open as soon as a stored code matches (no enter key), a code that
        # begins another would open the door for the longer one's holder, and hide it.
        if other.startswith(candidate) or candidate.startswith(other):
            return "begins, or is the beginning of, a code already on this lock"
    return None


def generate_code(
    rules: CodeRules,
    rng: random.Random,
    *,
    avoid: Collection[str | KeypadCode] = (),
) -> KeypadCode:
    """A code chosen uniformly among those `rules` accept at choose_length(rules), that is not
    weak (when the rules ask) and neither equals nor overlaps (as a prefix) a code in `avoid`.

    Uniform because it is rejection sampling over uniform draws. Use secrets.SystemRandom() in
    production (it is a random.Random); a seeded random.Random only in tests and demos."""
    # Codes are digits: keys such as * and # (or letters) may be on a keypad, but a code made of
    # them is not one every phone, SMS and nurse can type and read back.
    alphabet = "".join(dict.fromkeys(c for c in rules.alphabet if c in DIGITS))
    if not alphabet:
        raise NoCommonRule("these rules allow no digit at all")
    if alphabet != rules.alphabet:
        rules = replace(rules, alphabet=alphabet)
    length = choose_length(rules)
    taken = [a.reveal() if isinstance(a, KeypadCode) else a for a in avoid]
    space = len(alphabet) ** length
    tries = min(_MAX_TRIES, max(64, 8 * space))
    for _ in range(tries):
        candidate = "".join(rng.choice(alphabet) for _ in range(length))
        if check_code(rules, candidate) is None and _shadows(candidate, taken) is None:
            return KeypadCode(candidate)
    raise NoCodeAvailable(
        f"no acceptable {length}-digit code is left on this keypad after excluding weak codes "
        f"and the {len(taken)} codes already on the lock"
    )


# --- use-count limits (F1) ------------------------------------------------------------------------

_WHOLE_NUMBER = re.compile(r"\+?[0-9]+(\.0*)?")


def normalise_max_uses(value: object, field: str = "max_uses") -> int | None:
    """Return a use-count limit as an int (None = unlimited). Whole floats and numeric strings from
    JSON or a form are normalised (2.0 -> 2, "2" -> 2); anything else is refused with the field
    named, never silently ignored (F1: a float limit that never counted down)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidMaxUses(f"{field} must be a whole number of uses, not a yes/no value")
    number: int
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal):
        if not math.isfinite(value) or value != int(value):
            raise InvalidMaxUses(f"{field} must be a whole number of uses (got {value})")
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _WHOLE_NUMBER.fullmatch(text):
            shown = text if len(text) <= 20 else text[:20] + "..."
            raise InvalidMaxUses(f"{field} must be a whole number of uses (got {shown!r})")
        number = int(Decimal(text))
    else:
        kind = type(value).__name__
        raise InvalidMaxUses(f"{field} must be a whole number of uses (got a {kind})")
    if number < 1:
        raise InvalidMaxUses(
            f"{field} must be at least 1 (got {number}); leave it out for no limit"
        )
    if number > MAX_USES_LIMIT:
        raise InvalidMaxUses(f"{field} must be at most {MAX_USES_LIMIT} (leave it out for no limit)")
    return number


# --- slots (F7, F8, F27) --------------------------------------------------------------------------


def _capacity(slots: SlotRange | None) -> int | None:
    """The number of slots, or None when unknown (absent or a reported 0, F8)."""
    if slots is None or not isinstance(slots.count, int) or slots.count <= 0:
        return None
    return slots.count


def validate_slot(slots: SlotRange | None, slot: int) -> int:
    """Check an explicitly chosen slot and return it. Beyond the lock's capacity it is refused
    naming the capacity ("this lock has 30 slots", F7). With capacity unknown only the lower bound
    (1) is checked; no range is made up, so none can be inverted (F8)."""
    if isinstance(slot, bool) or not isinstance(slot, int):
        raise InvalidSlot(f"slot must be a whole number (got a {type(slot).__name__})")
    if slot < 1:
        raise InvalidSlot(f"slot {slot} does not exist: slots are numbered from 1")
    capacity = _capacity(slots)
    if capacity is not None and slot > capacity:
        plural = "slot" if capacity == 1 else "slots"
        raise InvalidSlot(
            f"slot {slot} is beyond the lock's capacity: this lock has {capacity} {plural}"
        )
    return slot


def allocate_slot(
    slots: SlotRange | None,
    taken: set[int],
    quarantined: set[int],
    unreadable: set[int],
) -> int:
    """The lowest free slot. Taken, quarantined (foreign or unverifiable codes, F27) and unreadable
    slots (no trustworthy read: absence of evidence is not evidence) are never handed out. Raises
    LockFull when nothing is left and CapacityUnknown when the lock's range was not reported."""
    capacity = _capacity(slots)
    if capacity is None:
        raise CapacityUnknown(
            "cannot allocate a slot: this lock did not report how many slots it has "
            "(read its capabilities again, or place the code in an explicit slot)"
        )
    blocked = set(taken) | set(quarantined) | set(unreadable)
    for slot in range(1, capacity + 1):
        if slot not in blocked:
            return slot
    in_range = range(1, capacity + 1)
    counts = {
        "in use": len(set(taken) & set(in_range)),
        "quarantined": len((set(quarantined) - set(taken)) & set(in_range)),
        "unreadable": len((set(unreadable) - set(taken) - set(quarantined)) & set(in_range)),
    }
    detail = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    raise LockFull(f"lock full: all {capacity} slots are unavailable ({detail})")
