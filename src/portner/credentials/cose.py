"""COSE_Sign1 (RFC 9052) built directly on cbor2, with strict deterministic-CBOR decoding."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2

COSE_SIGN1_TAG: Final = 18

# Common header labels (RFC 9052 §3.1).
HDR_ALG: Final = 1
HDR_KID: Final = 4

# COSE algorithm ids (RFC 9053): the only two this profile knows.
ALG_EDDSA: Final = -8
ALG_ES256: Final = -7
ALG_BY_NAME: Final[Mapping[str, int]] = {"EdDSA": ALG_EDDSA, "ES256": ALG_ES256}
ALG_NAME: Final[Mapping[int, str]] = {v: k for k, v in ALG_BY_NAME.items()}

# Nothing in this profile nests deeper than 4 levels; a low limit keeps hostile input cheap.
_MAX_DEPTH: Final = 8
_NEGATIVE_BASE: Final = 1 << 64
# cbor2 returns maps as dict, or as its frozendict where they must be hashable.
_MAP_TYPES: Final = (dict, cbor2.frozendict)


class CoseFormatError(ValueError):
    """The bytes are not a well-formed, deterministically encoded structure of this profile."""


def _key_rank(key: int) -> int:
    """Position of an int map key in RFC 8949 §4.2.1 order (bytewise order of its encoding)."""
    # Major type 0 (unsigned) sorts before major type 1 (negative); within a type, the encoded
    # argument sorts numerically because shortest-form heads grow with the value.
    return key if key >= 0 else _NEGATIVE_BASE - 1 - key


def _check_plain(obj: Any, depth: int) -> None:
    """Allow only ints, byte and text strings, arrays, and int-keyed maps in deterministic order."""
    kind = type(obj)
    if kind is int or kind is bytes or kind is str:
        return
    if depth >= _MAX_DEPTH:
        raise CoseFormatError("nested too deeply")
    if kind is list or kind is tuple:
        for item in obj:
            _check_plain(item, depth + 1)
        return
    if kind in _MAP_TYPES:
        previous = -1
        for key, value in obj.items():
            if type(key) is not int:
                raise CoseFormatError("map keys must be integers")
            rank = _key_rank(key)
            if rank <= previous:
                raise CoseFormatError("map keys out of deterministic order")
            previous = rank
            _check_plain(value, depth + 1)
        return
    # bool, float, None, undefined, simple values, tags (dates, bignums, shared refs...) are out.
    raise CoseFormatError(f"unexpected CBOR type {kind.__name__}")


def loads_raw(data: bytes) -> Any:
    """Decode one CBOR item, refusing duplicate keys and indefinite lengths; no other checks."""
    try:
        return cbor2.loads(
            data, allow_duplicate_keys=False, allow_indefinite=False, max_depth=_MAX_DEPTH
        )
    except cbor2.CBORError as exc:  # duplicate keys, indefinite lengths, truncation, bad UTF-8
        raise CoseFormatError("not well-formed CBOR") from exc


def strict_loads(data: bytes) -> Any:
    """Decode exactly one CBOR item that must be in deterministic encoding, with nothing after it.

    The decoder refuses duplicate keys and indefinite lengths; `_check_plain` refuses other types
    and unsorted keys; re-encoding (cbor2 always writes shortest heads, and keeps the decoded key
    order) and comparing catches trailing bytes, non-shortest heads and tags such as bignums.
    """
    obj = loads_raw(data)
    _check_plain(obj, 0)
    if cbor2.dumps(obj) != data:
        raise CoseFormatError("not in deterministic encoding")
    return obj


def _sorted(obj: Any) -> Any:
    # Exact type checks: this runs for every credential issued, and isinstance against the
    # Mapping ABC cost more than the signature itself.
    kind = type(obj)
    if kind in _MAP_TYPES:
        return {k: _sorted(obj[k]) for k in sorted(obj, key=_key_rank)}
    if kind is list or kind is tuple:
        return [_sorted(item) for item in obj]
    return obj


def encode(obj: Any) -> bytes:
    """Encode in RFC 8949 §4.2.1 deterministic CBOR (shortest heads, definite, sorted int keys)."""
    try:
        _check_plain(obj, 0)  # our own structures are built in order: the common, fast case
    except CoseFormatError:
        obj = _sorted(obj)
        _check_plain(obj, 0)
    return cbor2.dumps(obj)


# Heads for small arguments, by major type: most heads written per credential are one of these.
_SMALL_HEADS: Final = tuple(
    tuple(bytes((major << 5 | n,)) if n < 24 else bytes((major << 5 | 24, n)) for n in range(256))
    for major in range(8)
)


def _head(major: int, length: int) -> bytes:
    """Return the shortest CBOR head for a major type and argument."""
    if 0 <= length < 256:
        return _SMALL_HEADS[major][length]
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + length.to_bytes(size, "big")
    raise CoseFormatError("length too large")


def sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """Return what a COSE_Sign1 signature covers: ["Signature1", protected, aad, payload]."""
    # Built by hand (array of 4, tstr "Signature1", three bstr): the same bytes cbor2 would
    # write, without an encoder round trip on every door opening.
    return b"".join(
        (
            b"\x84\x6aSignature1",
            _head(2, len(protected)),
            protected,
            _head(2, len(external_aad)),
            external_aad,
            _head(2, len(payload)),
            payload,
        )
    )


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded, not yet verified COSE_Sign1 message."""

    protected_bytes: bytes
    protected: Mapping[Any, Any]
    unprotected: Mapping[Any, Any]
    payload: bytes
    signature: bytes

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        """Return the Sig_structure this message's signature must verify over."""
        return sig_structure(self.protected_bytes, external_aad, self.payload)


def decode_sign1(data: bytes) -> Sign1:
    """Parse a tagged COSE_Sign1 strictly (tag 18, 4 elements, attached payload, canonical)."""
    outer = loads_raw(data)
    if type(outer) is not cbor2.CBORTag or outer.tag != COSE_SIGN1_TAG:
        raise CoseFormatError("not a tagged COSE_Sign1")
    body = outer.value
    if type(body) not in (list, tuple) or len(body) != 4:
        raise CoseFormatError("COSE_Sign1 must be an array of 4")
    protected_bytes, unprotected, payload, signature = body
    if type(protected_bytes) is not bytes or type(payload) is not bytes:
        raise CoseFormatError("protected header and payload must be byte strings")
    if type(signature) is not bytes or type(unprotected) not in _MAP_TYPES:
        raise CoseFormatError("bad signature or unprotected header type")
    _check_plain(unprotected, 1)
    # Rebuild the one canonical encoding of what was decoded; any other bytes are refused.
    canonical = b"".join(
        (
            b"\xd2\x84",  # tag 18, array of 4
            _head(2, len(protected_bytes)),
            protected_bytes,
            cbor2.dumps(unprotected) if unprotected else b"\xa0",
            _head(2, len(payload)),
            payload,
            _head(2, len(signature)),
            signature,
        )
    )
    if canonical != data:
        raise CoseFormatError("not in deterministic encoding")
    # RFC 9052 §3: an empty protected header is the zero-length byte string.
    protected = strict_loads(protected_bytes) if protected_bytes else {}
    if type(protected) not in _MAP_TYPES:
        raise CoseFormatError("protected header must be a map")
    return Sign1(protected_bytes, protected, unprotected, payload, signature)


def uint(value: int) -> bytes:
    """Encode a non-negative int as a shortest-form CBOR unsigned integer (major type 0)."""
    return _head(0, value)


def tstr(value: str) -> bytes:
    """Encode a text string (major type 3), exactly as cbor2 writes it."""
    data = value.encode()
    return _head(3, len(data)) + data


def bstr(value: bytes) -> bytes:
    """Encode a byte string (major type 2)."""
    return _head(2, len(value)) + value


def array_head(length: int) -> bytes:
    """Return the head of a definite-length array (major type 4) of `length` items."""
    return _head(4, length)


def sign1_from_bytes(
    protected_bytes: bytes,
    payload: bytes,
    sign: Callable[[bytes], bytes],
    *,
    external_aad: bytes = b"",
) -> bytes:
    """Sign and assemble a tagged COSE_Sign1 from an already encoded protected header.

    The unprotected header is empty. `encode_sign1` with the decoded header gives the same bytes;
    this form lets a caller that signs thousands of messages encode its header once.
    """
    signature = sign(sig_structure(protected_bytes, external_aad, payload))
    return b"".join(
        (
            b"\xd2\x84",
            _head(2, len(protected_bytes)),
            protected_bytes,
            b"\xa0",
            _head(2, len(payload)),
            payload,
            _head(2, len(signature)),
            signature,
        )
    )


def encode_sign1(
    protected: Mapping[int, Any],
    payload: bytes,
    sign: Callable[[bytes], bytes],
    *,
    external_aad: bytes = b"",
    unprotected: Mapping[int, Any] | None = None,
) -> bytes:
    """Build and sign a tagged COSE_Sign1; `sign` turns the Sig_structure into a signature."""
    protected_bytes = encode(dict(protected)) if protected else b""
    signature = sign(sig_structure(protected_bytes, external_aad, payload))
    unprotected_bytes = encode(dict(unprotected)) if unprotected else b"\xa0"
    return b"".join(
        (
            b"\xd2\x84",
            _head(2, len(protected_bytes)),
            protected_bytes,
            unprotected_bytes,
            _head(2, len(payload)),
            payload,
            _head(2, len(signature)),
            signature,
        )
    )
