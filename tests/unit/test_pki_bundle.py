from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from tests.unit.conftest import NOW, cached_ca, make_cert
from trustwarden.pki import (
    InvalidArgumentError,
    InvalidPEMError,
    KeyAlgorithm,
    NamespaceBundleInput,
    RevokedSerial,
    anchors_to_pem,
    build_crl,
    build_namespace_bundle,
    create_self_signed_ca,
    filter_anchors,
    spiffe_bundle_jwks,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "pki" / "namespace_bundle.golden.json"


def b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_filter_anchors_dedupes_filters_sorts() -> None:
    a, b = make_cert("B-root"), make_cert("A-root")
    expired = make_cert("Old", not_before=NOW - timedelta(days=3), not_after=NOW)
    leaf = make_cert("leaf", issuer=a, ca=False)
    future = make_cert("Future", not_before=NOW + timedelta(days=1))
    out = filter_anchors([a.cert, leaf.cert, b.cert, a.cert, expired.cert, future.cert], NOW)
    assert [c.subject.rfc4514_string() for c in out] == ["CN=A-root", "CN=B-root", "CN=Future"]
    assert anchors_to_pem(out).count("BEGIN CERTIFICATE") == 3


@pytest.mark.parametrize("alg", list(KeyAlgorithm))
def test_jwks_key_parameters(alg: KeyAlgorithm) -> None:
    ca = cached_ca(alg)
    jwks = spiffe_bundle_jwks([ca.certificate], sequence=3, refresh_hint=300)
    assert jwks["spiffe_sequence"] == 3 and jwks["spiffe_refresh_hint"] == 300
    (key,) = jwks["keys"]
    assert key["use"] == "x509-svid"
    assert base64.b64decode(key["x5c"][0]) == ca.certificate.public_bytes(Encoding.DER)
    public = ca.certificate.public_key()
    if alg.value.startswith("ECDSA"):
        numbers = public.public_numbers()  # type: ignore[union-attr]
        assert (
            key["kty"] == "EC"
            and key["crv"] == {"ECDSAP256": "P-256", "ECDSAP384": "P-384"}[alg.value]
        )
        assert (b64url_int(key["x"]), b64url_int(key["y"])) == (numbers.x, numbers.y)  # type: ignore[union-attr]
        size = 32 if alg is KeyAlgorithm.ECDSAP256 else 48
        assert len(base64.urlsafe_b64decode(key["x"] + "==")) == size
    elif alg.is_rsa:
        numbers = public.public_numbers()  # type: ignore[union-attr]
        assert key["kty"] == "RSA" and key["e"] == "AQAB"
        assert b64url_int(key["n"]) == numbers.n  # type: ignore[union-attr]
    else:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and len(key["x"]) == 43
    assert "=" not in "".join(v for k, v in key.items() if k in {"x", "y", "n", "e"})


def test_jwks_argument_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="spiffe_sequence must be >= 0"):
        spiffe_bundle_jwks([], -1)
    with pytest.raises(InvalidArgumentError, match="spiffe_refresh_hint must be > 0"):
        spiffe_bundle_jwks([], 1, 0)
    assert "spiffe_refresh_hint" not in spiffe_bundle_jwks([], 1)


def _deterministic_ca(td: str, seed: int, serial: int):  # type: ignore[no-untyped-def]
    # Ed25519 signatures are deterministic, so fixed key + serial + clock = fixed bytes.
    key = ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"golden-{seed}".encode()).digest()
    )
    return create_self_signed_ca(
        td, KeyAlgorithm.Ed25519, timedelta(days=30), now=NOW, serial=serial, private_key=key
    )


def golden_bundle():  # type: ignore[no-untyped-def]
    prod = _deterministic_ca("prod.example.org", 1, 0x1111)
    prod_next = _deterministic_ca("prod.example.org", 2, 0x2222)
    partner = _deterministic_ca("partner.example.net", 3, 0x3333)
    crl = build_crl(
        prod,
        [RevokedSerial(0xABCDEF, NOW + timedelta(hours=1), NOW, "cessationOfOperation")],
        NOW,
        crl_number=1,
    )
    return build_namespace_bundle(
        {
            "prod.example.org": [prod_next.certificate, prod.certificate, prod.certificate],
            "partner.example.net": [partner.certificate],
        },
        {"prod.example.org": crl},
        NOW,
        sequence=7,
    )


def test_namespace_bundle_matches_golden() -> None:
    bundle = golden_bundle()
    document = {"data": bundle.data, "content_hash": bundle.content_hash}
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    assert document == json.loads(GOLDEN.read_text())


def test_namespace_bundle_layout() -> None:
    bundle = golden_bundle()
    data = bundle.data
    assert sorted(data) == [
        "bundle.spiffe",
        "ca.crt",
        "partner.example.net.pem",
        "prod.example.org.crl.pem",
        "prod.example.org.pem",
    ]
    assert data["ca.crt"].count("BEGIN CERTIFICATE") == 3  # prod deduplicated
    assert data["prod.example.org.pem"].count("BEGIN CERTIFICATE") == 2
    spiffe = json.loads(data["bundle.spiffe"])
    assert sorted(spiffe) == ["partner.example.net", "prod.example.org"]
    assert len(spiffe["prod.example.org"]["keys"]) == 2
    assert data["bundle.spiffe"] == json.dumps(spiffe, sort_keys=True, separators=(",", ":"))
    x509.load_pem_x509_crl(data["prod.example.org.crl.pem"].encode())
    assert golden_bundle().content_hash == bundle.content_hash  # deterministic
    assert "PRIVATE" not in "".join(data.values())


def test_content_hash_changes_with_content() -> None:
    a = cached_ca()
    one = build_namespace_bundle({"prod.example.org": [a.certificate]}, {}, NOW, 1)
    two = build_namespace_bundle({"prod.example.org": [a.certificate]}, {}, NOW, 2)
    assert one.content_hash != two.content_hash
    same = NamespaceBundleInput({"prod.example.org": [a.certificate]}, sequence=1).build(NOW)
    assert same == one
    # Anchors that expired fall out, so the hash moves on by itself.
    later = build_namespace_bundle({"prod.example.org": [a.certificate]}, {}, a.not_after, 1)
    assert later.data["prod.example.org.pem"] == "" and later.content_hash != one.content_hash


def test_bundle_input_errors() -> None:
    a = cached_ca()
    crl = build_crl(a, [], NOW, crl_number=1)
    with pytest.raises(
        InvalidArgumentError, match=r"a CRL was given for trust domain 'other\.org'"
    ):
        build_namespace_bundle({"prod.example.org": [a.certificate]}, {"other.org": crl}, NOW, 1)
    with pytest.raises(InvalidPEMError, match="is not a PEM X509 CRL"):
        build_namespace_bundle(
            {"prod.example.org": [a.certificate]}, {"prod.example.org": b"x"}, NOW, 1
        )
    with pytest.raises(Exception, match="bundle trust domain: 'Bad' contains uppercase"):
        build_namespace_bundle({"Bad": [a.certificate]}, {}, NOW, 1)
    with pytest.raises(InvalidArgumentError, match="collide"):
        build_namespace_bundle({"x": [a.certificate], "x.crl": [a.certificate]}, {"x": crl}, NOW, 1)
