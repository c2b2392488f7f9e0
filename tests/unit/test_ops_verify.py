"""`trustwarden verify` checks on good, tampered, expired, not-yet-valid, revoked and
non-conforming inputs, and the --from-file parser."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.conftest import make_cert
from tests.unit.test_ops_fixtures import (
    NOW,
    bundle_body,
    make_ca,
    make_leaf,
    secret_body,
)
from trustwarden.ops import verify as ver
from trustwarden.ops.errors import UsageError
from trustwarden.ops.verify import Outcome
from trustwarden.pki import Authority, IssuedLeaf, Usage, build_crl, private_key_to_pem

P256 = ec.SECP256R1()


@pytest.fixture(scope="module")
def ca() -> Authority:
    return make_ca("ecdsa-ca", key=ec.generate_private_key(P256), serial=0xCA01)


@pytest.fixture(scope="module")
def leaf(ca: Authority) -> IssuedLeaf:
    return make_leaf(ca, "/ns/payments/sa/api", serial=0xAB01, key=ec.generate_private_key(P256))


def run(
    leaf: IssuedLeaf,
    bundle: dict[str, Any] | None,
    *,
    now: Any = NOW,
    key: bytes | None = None,
    chain: bytes | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, ver.Check]:
    data = ver.VerifyInput(
        chain_pem=chain if chain is not None else leaf.chain_pem,
        key_pem=key if key is not None else leaf.private_key_pem,
        annotations=annotations if annotations is not None else leaf.annotations(),
        bundle=None if bundle is None else bundle["data"],
        source="Secret payments/api-svid",
        bundle_source="ConfigMap payments/trustwarden-bundle",
    )
    return {c.name: c for c in ver.verify(data, now)}


def outcomes(checks: dict[str, ver.Check]) -> dict[str, str]:
    return {name: c.outcome.value for name, c in checks.items()}


ALL_PASS = {
    "chain": "PASS",
    "spiffe": "PASS",
    "key-pair": "PASS",
    "revocation": "PASS",
    "validity": "PASS",
}


def test_good_secret_passes_every_check(ca: Authority, leaf: IssuedLeaf) -> None:
    checks = run(leaf, bundle_body("payments", [ca]))
    assert outcomes(checks) == ALL_PASS
    assert list(checks) == ["chain", "spiffe", "key-pair", "revocation", "validity"]
    assert checks["chain"].line.startswith(
        "PASS chain: verifies against ConfigMap payments/trustwarden-bundle ca.crt"
    )
    assert "spiffe://prod.example.org/ns/payments/sa/api" in checks["spiffe"].detail
    assert "50m left" in checks["validity"].detail
    assert "signature checked" in checks["revocation"].detail


def test_server_only_leaf_passes_the_chain(ca: Authority) -> None:
    server = make_leaf(ca, "/ns/payments/sa/web", serial=0xAB02, usages=frozenset({Usage.server}))
    assert outcomes(run(server, bundle_body("payments", [ca]))) == ALL_PASS


def test_swapped_key_fails_key_pair_only(ca: Authority, leaf: IssuedLeaf) -> None:
    other = private_key_to_pem(ec.generate_private_key(P256))
    checks = run(leaf, bundle_body("payments", [ca]), key=other)
    assert outcomes(checks) == {**ALL_PASS, "key-pair": "FAIL"}
    assert checks["key-pair"].line == (
        "FAIL key-pair: tls.key does not belong to the certificate in tls.crt"
    )


def test_missing_or_garbage_key(ca: Authority, leaf: IssuedLeaf) -> None:
    checks = run(leaf, bundle_body("payments", [ca]), key=b"")
    assert checks["key-pair"].detail == "Secret payments/api-svid has no tls.key"
    checks = run(leaf, bundle_body("payments", [ca]), key=b"-----BEGIN PRIVATE KEY-----\nxx\n")
    assert checks["key-pair"].failed and "cannot be parsed" in checks["key-pair"].detail


def test_expired_fails_validity_and_chain(ca: Authority, leaf: IssuedLeaf) -> None:
    later = leaf.not_after + timedelta(minutes=5)
    bundle = bundle_body("payments", [ca], now=later)
    checks = run(leaf, bundle, now=later)
    assert checks["validity"].line == (
        f"FAIL validity: expired at {leaf.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')} (5m ago)"
    )
    assert checks["chain"].failed and "not valid at validation time" in checks["chain"].detail
    assert checks["spiffe"].outcome is Outcome.PASS
    assert checks["key-pair"].outcome is Outcome.PASS


def test_not_yet_valid(ca: Authority, leaf: IssuedLeaf) -> None:
    earlier = leaf.not_before - timedelta(hours=1)
    checks = run(leaf, bundle_body("payments", [ca], now=earlier), now=earlier)
    assert checks["validity"].failed
    assert checks["validity"].detail.startswith("not valid before")


def test_revoked_fails_revocation(ca: Authority, leaf: IssuedLeaf) -> None:
    checks = run(leaf, bundle_body("payments", [ca], revoked=[(ca, leaf)]))
    assert outcomes(checks) == {**ALL_PASS, "revocation": "FAIL"}
    detail = checks["revocation"].detail
    assert detail.startswith(f"serial {leaf.serial_hex} is revoked (since ")
    assert "reason keyCompromise" in detail


def test_revocation_in_the_second_of_several_concatenated_crls(
    ca: Authority, leaf: IssuedLeaf
) -> None:
    other = make_ca("other", key=ec.generate_private_key(P256), serial=0xCA02)
    bundle = bundle_body("payments", [other, ca], revoked=[(ca, leaf)])
    assert bundle["data"]["prod.example.org.crl.pem"].count("BEGIN X509 CRL") == 2
    assert run(leaf, bundle)["revocation"].failed


def test_forged_crl_is_not_trusted(ca: Authority, leaf: IssuedLeaf) -> None:
    """A CRL with the issuer's name but another key's signature proves nothing."""
    forger = Authority(
        certificate=ca.certificate,
        private_key=ec.generate_private_key(P256),
        chain=(),
        root=ca.certificate,
    )
    bundle = bundle_body("payments", [ca])
    bundle["data"]["prod.example.org.crl.pem"] = build_crl(forger, [], NOW, crl_number=1).decode()
    check = run(leaf, bundle)["revocation"]
    assert check.failed and "not signed by the issuer" in check.detail


def test_stale_crl_fails(ca: Authority, leaf: IssuedLeaf) -> None:
    bundle = bundle_body("payments", [ca], now=NOW - timedelta(days=2))
    check = run(leaf, bundle)["revocation"]
    assert check.failed and "expired at" in check.detail


def test_missing_crl_and_missing_bundle(ca: Authority, leaf: IssuedLeaf) -> None:
    bundle = bundle_body("payments", [ca])
    del bundle["data"]["prod.example.org.crl.pem"]
    check = run(leaf, bundle)["revocation"]
    assert check.failed and "no readable prod.example.org.crl.pem" in check.detail
    checks = run(leaf, None)
    assert outcomes(checks) == {**ALL_PASS, "chain": "FAIL", "revocation": "FAIL"}
    assert "ConfigMap payments/trustwarden-bundle not found" in checks["chain"].detail


def test_wrong_anchor_fails_chain(leaf: IssuedLeaf) -> None:
    stranger = make_ca("stranger", key=ec.generate_private_key(P256), serial=0xCA03)
    checks = run(leaf, bundle_body("payments", [stranger]))
    assert checks["chain"].failed
    assert checks["revocation"].failed  # no CRL from the leaf's issuer either


def test_tampered_certificate_signature_fails_chain(ca: Authority, leaf: IssuedLeaf) -> None:
    """Same names, same key ids, another signer: the path builder rejects it."""
    impostor = make_ca("impostor", key=ec.generate_private_key(P256), serial=0xCA01)
    fake = make_leaf(impostor, "/ns/payments/sa/api", serial=0xAB01)
    checks = run(fake, bundle_body("payments", [ca]))
    assert checks["chain"].failed


def test_non_spiffe_certificates_fail_spiffe(ca: Authority, leaf: IssuedLeaf) -> None:
    root = make_cert("Corp Root")
    plain = make_cert("plain", issuer=root, ca=False)
    checks = run(leaf, bundle_body("payments", [ca]), chain=plain.pem, key=plain.key_pem)
    assert checks["spiffe"].line == "FAIL spiffe: 0 URI SANs; an X509-SVID has exactly one"
    ca_leaf = make_cert("ca-as-leaf", issuer=root, ca=True)
    checks = run(leaf, None, chain=ca_leaf.pem, key=ca_leaf.key_pem)
    assert checks["spiffe"].failed


def test_spiffe_checks_ca_flag_and_key_usage() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])

    def cert(*exts: tuple[x509.ExtensionType, bool]) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(9)
            .not_valid_before(NOW - timedelta(hours=1))
            .not_valid_after(NOW + timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier("spiffe://prod.example.org/ns/a/sa/b")]
                ),
                False,
            )
        )
        for ext, critical in exts:
            builder = builder.add_extension(ext, critical)
        from cryptography.hazmat.primitives.serialization import Encoding

        return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)

    ku = dict.fromkeys(
        ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only", "crl_sign"], False,
    )  # fmt: skip
    signing = x509.KeyUsage(digital_signature=True, key_cert_sign=True, **ku)
    cases = {
        "basicConstraints is missing": cert(),
        "basicConstraints CA:true": cert((x509.BasicConstraints(ca=True, path_length=None), True)),
        "keyUsage is missing": cert((x509.BasicConstraints(ca=False, path_length=None), True)),
        "keyCertSign or cRLSign": cert(
            (x509.BasicConstraints(ca=False, path_length=None), True), (signing, True)
        ),
    }
    dummy = make_leaf(make_ca(), "/ns/a/sa/b", serial=1)
    for expected, pem in cases.items():
        check = run(dummy, None, chain=pem, annotations={})["spiffe"]
        assert check.failed and expected in check.detail, (expected, check)


def test_annotation_mismatch_fails_spiffe(ca: Authority, leaf: IssuedLeaf) -> None:
    annotations = {**leaf.annotations(), "trustwarden.io/spiffe-id": "spiffe://x.org/ns/a/sa/b"}
    check = run(leaf, bundle_body("payments", [ca]), annotations=annotations)["spiffe"]
    assert check.failed and "annotated spiffe://x.org/ns/a/sa/b" in check.detail


def test_ed25519_chain_is_checked_by_signature() -> None:
    ca = make_ca("ed-ca")
    good = make_leaf(ca, "/ns/payments/sa/api", serial=0x77)
    checks = run(good, bundle_body("payments", [ca]))
    assert outcomes(checks) == ALL_PASS
    assert "EdDSA" in checks["chain"].detail
    stranger = make_ca("ed-stranger")
    assert run(good, bundle_body("payments", [stranger]))["chain"].failed
    later = good.not_after + timedelta(seconds=1)
    assert run(good, bundle_body("payments", [ca], now=later), now=later)["chain"].failed


def test_unreadable_certificate() -> None:
    dummy = make_leaf(make_ca(), "/ns/a/sa/b", serial=1)
    data = ver.VerifyInput(b"garbage", None, {}, None, source="Secret a/b")
    (check,) = ver.verify(data, NOW)
    assert check.line == "FAIL certificate: Secret a/b tls.crt is not a readable PEM certificate"
    (check,) = ver.verify(ver.VerifyInput(None, dummy.private_key_pem, {}, None), NOW)
    assert check.failed


# --------------------------------------------------------------------------- --from-file


def test_parse_file_secret_yaml_and_json(ca: Authority, leaf: IssuedLeaf) -> None:
    secret = secret_body("payments", "api-svid", leaf, ca, identity="api")
    for content in (yaml.safe_dump(secret).encode(), json.dumps(secret).encode()):
        source = ver.parse_file(content, "saved.yaml")
        assert source.chain_pem == leaf.chain_pem
        assert source.key_pem == leaf.private_key_pem
        assert source.namespace == "payments" and source.name == "api-svid"
        assert source.annotations["trustwarden.io/serial"] == leaf.serial_hex
        assert source.is_secret


def test_parse_file_pem(leaf: IssuedLeaf) -> None:
    source = ver.parse_file(leaf.chain_pem, "leaf.pem")
    assert source.chain_pem == leaf.chain_pem and source.key_pem is None
    assert not source.is_secret
    both = ver.parse_file(leaf.private_key_pem + leaf.chain_pem, "both.pem")
    assert both.key_pem == leaf.private_key_pem
    checks = ver.verify(ver.VerifyInput(source.chain_pem, None, {}, None, key_expected=False), NOW)
    assert {c.name: c.outcome for c in checks}["key-pair"] is Outcome.SKIP


def test_parse_file_rejects_other_documents() -> None:
    with pytest.raises(UsageError, match="expected a Secret"):
        ver.parse_file(b"kind: ConfigMap\n", "cm.yaml")
    with pytest.raises(UsageError, match="neither PEM nor a Secret"):
        ver.parse_file(b"{not json", "x.json")
    bad = {"kind": "Secret", "data": {"tls.crt": "!!!"}}
    with pytest.raises(UsageError, match="not valid base64"):
        ver.parse_file(json.dumps(bad).encode(), "x.json")
    string_data = {
        "kind": "Secret",
        "stringData": {"tls.crt": "PEM"},
        "data": {"tls.key": base64.b64encode(b"K").decode()},
    }
    source = ver.parse_file(json.dumps(string_data).encode(), "x.json")
    assert source.chain_pem == b"PEM" and source.key_pem == b"K"
