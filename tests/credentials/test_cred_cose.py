"""COSE_Sign1 layer: published test vectors and the strict decoder's refusals."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from portner.credentials import DeviceKey, IssuerKey, IssuerPublicKey, device_thumbprint
from portner.credentials.cose import CoseFormatError, decode_sign1, encode, strict_loads
from portner.credentials.keys import cose_key_thumbprint, device_cose_key

# RFC 8392 Appendix A.3: a signed CWT (ES256); key from Appendix A.2.3.
RFC8392_A3 = bytes.fromhex(
    "d28443a10126a104524173796d6d657472696345434453413235365850a70175636f61703a2f2f61732e"
    "6578616d706c652e636f6d02656572696b77037818636f61703a2f2f6c696768742e6578616d706c652e"
    "636f6d041a5612aeb0051a5610d9f0061a5610d9f007420b7158405427c1ff28d23fbad1f29c4c7c6a55"
    "5e601d6fa29f9179bc3d7438bacaca5acd08c8d4d4f96131680c429a01f85951ecee743a52b9b63632c5"
    "7209120e1c9e30"
)
RFC8392_A23_KEY = bytes.fromhex(
    "a72358206c1382765aec5358f117733d281c1c7bdc39884d04a45a1e6c67c858bc206c19225820"
    "60f7f1a780d8a783bfb7a2dd6b2796e8128dbbcef9d3d168db9529971a36e7b9215820143329cc"
    "e7868e416927599cf65a34f3ce2ffda55a7eca69ed8919a394d42f0f2001010202524173796d6d"
    "657472696345434453413235360326"
)
# RFC 8032 §7.1 TEST 1 (empty message) and TEST 2 (one byte 0x72).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


def _a23_public() -> IssuerPublicKey:
    key = cbor2.loads(RFC8392_A23_KEY)
    point = b"\x04" + key[-2] + key[-3]
    return IssuerPublicKey.from_bytes("ES256", b"A.2.3", point)


def test_rfc8392_a3_signed_cwt_verifies() -> None:
    msg = decode_sign1(RFC8392_A3)
    assert msg.unprotected == {4: b"AsymmetricECDSA256"}
    assert _a23_public().verify(msg.signature, msg.to_be_signed(b""))
    claims = strict_loads(msg.payload)
    assert claims[2] == "erikw" and claims[4] == 1444064944 and claims[7] == bytes.fromhex("0b71")


def test_rfc8392_a3_tampered_fails() -> None:
    msg = decode_sign1(RFC8392_A3)
    key = _a23_public()
    assert not key.verify(msg.signature, msg.to_be_signed(b"other aad"))
    flipped = bytes([msg.signature[0] ^ 1]) + msg.signature[1:]
    assert not key.verify(flipped, msg.to_be_signed(b""))


def test_rfc8392_a23_private_key_matches_public() -> None:
    key = cbor2.loads(RFC8392_A23_KEY)
    private = ec.derive_private_key(int.from_bytes(key[-4], "big"), ec.SECP256R1())
    issuer = IssuerKey(private, kid=b"A.2.3")
    assert issuer.public == _a23_public()
    # ECDSA is randomised, so sign fresh and check our own verifier accepts it.
    assert issuer.public.verify(issuer.sign(b"hello"), b"hello")


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    device = DeviceKey.from_private_bytes(bytes.fromhex(seed))
    assert device.public_key_bytes.hex() == public
    issuer = IssuerKey.from_seed(bytes.fromhex(seed))
    assert issuer.sign(bytes.fromhex(message)).hex() == signature
    pub = IssuerPublicKey.from_bytes("EdDSA", b"rfc8032", bytes.fromhex(public))
    assert pub.verify(bytes.fromhex(signature), bytes.fromhex(message))
    assert not pub.verify(bytes.fromhex(signature), bytes.fromhex(message) + b"\x00")


def test_rfc9679_thumbprint_vector() -> None:
    key = {
        1: 2,
        -1: 1,
        -2: bytes.fromhex("65eda5a12577c2bae829437fe338701a10aaa375e1bb5b5de108de439c08551d"),
        -3: bytes.fromhex("1e52ed75701163f7f9e40ddf9f341b3dc9ba860af7e0ca7ca7e9eecd0084d19c"),
    }
    assert (
        cose_key_thumbprint(key).hex()
        == "496bd8afadf307e5b08c64b0421bf9dc01528a344a43bda88fadd1669da253ec"
    )


def test_device_thumbprint_is_rfc9679_of_the_cnf_key() -> None:
    device = DeviceKey.from_private_bytes(bytes(32))
    raw = device.public_key_bytes
    assert device_thumbprint(raw) == cose_key_thumbprint(device_cose_key(raw))
    assert device_thumbprint(raw) != device_thumbprint(DeviceKey.generate().public_key_bytes)
    with pytest.raises(ValueError):
        device_thumbprint(raw[:31])


def test_issuer_key_round_trips_through_pkcs8() -> None:
    for alg in ("EdDSA", "ES256"):
        key = IssuerKey.generate(alg)
        again = IssuerKey.from_private_bytes(key.to_private_bytes())
        assert again.kid == key.kid and again.alg == alg
        assert again.public == key.public
        assert IssuerPublicKey.from_bytes(alg, key.kid, key.public.to_bytes()) == key.public
        assert key.kid == key.public.thumbprint()[:8]
        assert key.to_private_bytes().hex() not in repr(key)


def test_kid_length_is_enforced() -> None:
    with pytest.raises(ValueError):
        IssuerKey.generate(kid=b"abc")
    with pytest.raises(ValueError):
        IssuerKey.generate(kid=b"123456789")
    assert IssuerKey.generate(kid=b"kid4").kid == b"kid4"


def test_device_key_round_trip() -> None:
    device = DeviceKey.generate()
    again = DeviceKey.from_private_bytes(device.to_private_bytes())
    assert again.public_key_bytes == device.public_key_bytes
    assert device.to_private_bytes().hex() not in repr(device)


@pytest.mark.parametrize(
    ("hex_data", "why"),
    [
        ("0100", "trailing byte"),
        ("1801", "non-shortest int"),
        ("a201000100", "duplicate key"),
        ("a202000100", "unsorted keys"),
        ("5f4100ff", "indefinite byte string"),
        ("c24101", "bignum tag"),
        ("f93c00", "float"),
        ("f5", "bool"),
        ("a1616100", "text map key"),
        ("c11a00000001", "date tag"),
        ("62fffe", "invalid utf-8"),
        ("", "empty"),
    ],
)
def test_strict_loads_refuses(hex_data: str, why: str) -> None:
    with pytest.raises(ValueError):
        strict_loads(bytes.fromhex(hex_data))


def test_deterministic_order_is_rfc8949_bytewise() -> None:
    # Bytewise order puts 24 (0x1818) before -1 (0x20); length-first order would not.
    assert encode({-1: 0, 24: 0, 1: 0, -65537: 0}) == bytes.fromhex("a4010018180020003a0001000000")
    assert strict_loads(bytes.fromhex("a21818002000")) == {24: 0, -1: 0}
    with pytest.raises(CoseFormatError):
        strict_loads(bytes.fromhex("a22000181800"))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b + b"\x00",  # trailing bytes
        lambda b: b"\xd1" + b[1:],  # COSE_Mac0 tag
        lambda b: b"\xd8\x3d" + b,  # wrapped in the CWT tag 61
        lambda b: b[1:],  # untagged
        lambda b: b"\xd8\x12" + b[1:],  # tag 18 in a non-shortest head
    ],
)
def test_decode_sign1_refuses_framing(mutate, credential: bytes) -> None:  # type: ignore[no-untyped-def]
    decode_sign1(credential)
    with pytest.raises(ValueError):
        decode_sign1(mutate(credential))


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_hand_built_sig_structure_is_the_cbor_encoding(size: int) -> None:
    from portner.credentials.cose import sig_structure

    protected, aad, payload = b"\xa1\x01\x27", b"x" * (size % 300), bytes(size)
    assert sig_structure(protected, aad, payload) == cbor2.dumps(
        ["Signature1", protected, aad, payload]
    )
