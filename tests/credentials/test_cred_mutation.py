"""Property tests: any mutation of credential, challenge or proof bytes is denied."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portner.credentials import DenyReason

from .conftest import Present

# Deterministic (derandomize) so CI failures reproduce; enough examples to cover every byte.
MUTATIONS = settings(
    max_examples=300,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """One byte flip, insertion, deletion or truncation of `original` (never the original)."""
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    if kind == "flip":
        i = draw(st.integers(0, len(original) - 1))
        mask = draw(st.integers(1, 255))
        return original[:i] + bytes([original[i] ^ mask]) + original[i + 1 :]
    if kind == "insert":
        i = draw(st.integers(0, len(original)))
        return original[:i] + bytes([draw(st.integers(0, 255))]) + original[i:]
    if kind == "delete":
        i = draw(st.integers(0, len(original) - 1))
        return original[:i] + original[i + 1 :]
    return original[: draw(st.integers(0, len(original) - 1))]


@MUTATIONS
@given(data=st.data())
def test_any_credential_mutation_is_denied(
    present: Present, credential: bytes, data: st.DataObject
) -> None:
    bad = data.draw(mutated(credential))
    assert bad != credential
    verdict = present(credential=bad)
    assert not verdict.allowed
    assert verdict.reason is not DenyReason.OK


@MUTATIONS
@given(data=st.data())
def test_any_proof_mutation_is_denied(present: Present, proof: bytes, data: st.DataObject) -> None:
    bad = data.draw(mutated(proof))
    verdict = present(proof=bad)
    assert not verdict.allowed
    # The credential itself is intact, so the lock knows whose proof failed.
    assert verdict.reason is DenyReason.BAD_PROOF and verdict.credential_id is not None


@MUTATIONS
@given(data=st.data())
def test_any_challenge_mutation_is_denied(present: Present, data: st.DataObject) -> None:
    from .helpers import CHALLENGE

    bad = data.draw(mutated(CHALLENGE))
    verdict = present(challenge=bad)
    assert not verdict.allowed
    assert verdict.reason in (DenyReason.BAD_PROOF, DenyReason.MALFORMED)


def test_unmutated_inputs_are_allowed(present: Present) -> None:
    # Guards the properties above against passing vacuously (e.g. a fixture that never verifies).
    assert present().allowed
