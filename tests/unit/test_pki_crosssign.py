"""Issue 20: the default activation delay, cross-signed and compromised rotations.

The cross-signed chains are checked by OpenSSL (a subprocess) and by cryptography's verifier,
against only the old anchors and against only the new ones."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store

from tests.unit.conftest import NOW, TD, request
from trustwarden.pki import (
    AuthoritySet,
    AuthorityState,
    DesiredLeaf,
    KeyAlgorithm,
    RenewalReason,
    SpiffeID,
    Usage,
    advance,
    create_self_signed_ca,
    decide_renewal,
    force_rotate,
    issue_leaf,
    next_event_at,
    record_from_dict,
    record_issued,
    record_to_dict,
)
from trustwarden.pki.crosssign import cross_certify, is_cross_certificate_for
from trustwarden.pki.propagation import (
    RotationMode,
    activation_risk,
    default_activate_after,
    plan_activation,
)
from trustwarden.pki.rotation import pending_activation
from trustwarden.reconcile.domains import decode_authorities, encode_authorities
from trustwarden.reconcile.rotation_request import (
    RotationRequestError,
    parse_request,
    rotation_status,
)

LIFE = timedelta(days=30)
OPENSSL = "/usr/bin/openssl"
M = timedelta(minutes=1)


def make(now):  # type: ignore[no-untyped-def]
    return create_self_signed_ca(TD, KeyAlgorithm.ECDSAP256, LIFE, now=now)


def started() -> AuthoritySet:
    return advance(AuthoritySet(), NOW, make)[0]


# --------------------------------------------------------------------------- delay


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (timedelta(0), 3 * M),
        (M, 3 * M),
        (2 * M, 3 * M),  # the default propagationDelay: exactly the floor
        (3 * M, 4.5 * M),
        (10 * M, 15 * M),
        (timedelta(seconds=20.3), 3 * M),
    ],
)
def test_default_activate_after(delay: timedelta, expected: timedelta) -> None:
    assert default_activate_after(delay) == expected


def test_default_activate_after_scaled_floor_and_rounding() -> None:
    floor = timedelta(seconds=30)
    assert default_activate_after(timedelta(seconds=20), floor=floor) == floor
    assert default_activate_after(timedelta(seconds=20.5), floor=timedelta(0)) == timedelta(
        seconds=31
    )  # 30.75 s rounds up, never down
    with pytest.raises(ValueError, match="must not be negative"):
        default_activate_after(-M)


def test_activation_risk_names_the_danger_and_the_way_out() -> None:
    assert activation_risk(3 * M, 2 * M) is None
    assert activation_risk(10 * M, 2 * M) is None
    risk = activation_risk(timedelta(minutes=1), 2 * M)
    assert risk is not None
    assert "shorter than the default 3m" in risk and "CERTIFICATE_VERIFY_FAILED" in risk
    assert "--cross-sign" in risk
    assert activation_risk(timedelta(seconds=5), 2 * M, mode=RotationMode.cross_sign) is None
    assert activation_risk(timedelta(0), 2 * M, mode=RotationMode.compromised) is None


def test_plan_activation_says_when_and_why() -> None:
    plan = plan_activation(NOW, RotationMode.standard, 3 * M, 2 * M, requested=False)
    assert plan.at == NOW + 3 * M
    assert plan.reason.startswith("default: 3m after the request = max(3m, 1.5 x")
    short = plan_activation(NOW, RotationMode.standard, M, 2 * M, requested=True)
    assert "shorter than the default 3m" in short.reason
    cross = plan_activation(
        NOW, RotationMode.cross_sign, timedelta(seconds=5), 2 * M, requested=True
    )
    assert cross.at == NOW + timedelta(seconds=5) and "cross-certificate" in cross.reason
    bad = plan_activation(NOW, RotationMode.compromised, 3 * M, 2 * M, requested=False)
    assert bad.at == NOW and "fail until their volumes update" in bad.reason


def test_parse_request_from_annotations() -> None:
    def parse(**annotations: str):  # type: ignore[no-untyped-def]
        return parse_request("prod", annotations, NOW, propagation_delay=2 * M)

    assert parse() is None
    default = parse(**{"trustwarden.io/rotate": "r1"})
    assert default is not None
    assert (default.mode, default.activate_after, default.requested) == (
        RotationMode.standard,
        3 * M,
        False,
    )
    assert default.warning is None
    short = parse(**{"trustwarden.io/rotate": "r2", "trustwarden.io/activate-after": "1m"})
    assert short is not None and short.warning is not None and "shorter" in short.warning
    gone = parse(**{"trustwarden.io/rotate": "r3", "trustwarden.io/rotation-mode": "compromised"})
    assert gone is not None and gone.activate_after == timedelta(0)
    assert gone.warning is not None and "WILL FAIL" in gone.warning
    with pytest.raises(RotationRequestError, match=r"trustwarden.io/rotation-mode='fast'"):
        parse(**{"trustwarden.io/rotate": "r4", "trustwarden.io/rotation-mode": "fast"})
    with pytest.raises(RotationRequestError, match="TrustDomain prod: annotation"):
        parse(**{"trustwarden.io/rotate": "r5", "trustwarden.io/activate-after": "soon"})


# --------------------------------------------------------------------------- cross-signing


def test_cross_certificate_contents() -> None:
    aset = started()
    old = aset.active_authority
    assert old is not None
    new = make(NOW + M)
    cross = cross_certify(new, old, NOW + M)
    assert cross.subject == new.certificate.subject
    assert cross.issuer == old.certificate.subject
    assert cross.public_key() == new.certificate.public_key()
    assert is_cross_certificate_for(cross, new, old)
    assert not is_cross_certificate_for(new.certificate, new, old)
    ski = cross.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cross.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert ski == new.subject_key_identifier
    assert aki.key_identifier == old.subject_key_identifier.digest
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # It never vouches for longer than the old authority may.
    assert cross.not_valid_after_utc <= old.not_after
    with pytest.raises(ValueError, match="cannot cross-certify itself"):
        cross_certify(old, old, NOW)


def cross_rotation() -> tuple[AuthoritySet, AuthoritySet]:
    """Before and after activating a cross-signed successor 5 s after the request."""
    aset = started()
    at = NOW + timedelta(hours=1)
    prepared = force_rotate(
        aset, at, make, timedelta(seconds=5), mode=RotationMode.cross_sign, activation_reason="r"
    )
    activated, transitions = advance(prepared, at + timedelta(seconds=5), make)
    assert [t.kind.value for t in transitions] == ["retired", "activated"]
    return prepared, activated


def test_cross_signed_leaves_carry_the_cross_certificate() -> None:
    prepared, activated = cross_rotation()
    record = prepared.prepared_record
    assert record is not None and record.cross_certificate is not None
    assert record.cross_signer == started_sha(prepared)
    assert record.activation_reason == "r"
    active = activated.active_authority
    assert active is not None and active.sha256 == record.sha256
    leaf = issue_leaf(active, request(), NOW + timedelta(hours=1, seconds=6),
                      cross_chain_pem=activated.cross_chain_pem)  # fmt: skip
    chain = x509.load_pem_x509_certificates(leaf.chain_pem)
    assert [c.subject for c in chain[1:]] == [active.certificate.subject]
    assert chain[1] == record.cross_certificate
    assert activated.issuing_intermediates_der == (
        record.cross_certificate.public_bytes(Encoding.DER),
    )


def started_sha(aset: AuthoritySet) -> str:
    return next(r.sha256 for r in aset.records if r.state is AuthorityState.Active)


def test_retirement_drops_the_cross_certificate_and_renews_its_leaves() -> None:
    _, activated = cross_rotation()
    retired = next(r for r in activated.records if r.state is AuthorityState.Retired)
    # Its last leaf, issued just before the rotation, expires in an hour.
    activated = record_issued(activated, retired.sha256, NOW + timedelta(hours=2))
    retired = activated.by_sha256[retired.sha256]
    at = NOW + timedelta(hours=1, seconds=6)
    leaf = issue_leaf(activated.active_authority, request(), at,  # type: ignore[arg-type]
                      cross_chain_pem=activated.cross_chain_pem)  # fmt: skip
    facts = leaf.to_facts(activated.active_authority)
    desired = DesiredLeaf(
        SpiffeID(TD, "/ns/payments/sa/payments"),
        ("payments.payments.svc",),
        timedelta(hours=1),
        KeyAlgorithm.ECDSAP256,
        frozenset({Usage.server, Usage.client}),
    )
    kept = decide_renewal(facts, desired, activated, at, jitter_key="k")
    assert kept.reason is RenewalReason.UpToDate
    # The old anchor leaves once its last leaf expired: the cross-certificate goes with it.
    assert next_event_at(activated) is not None
    later = retired.drop_at + timedelta(seconds=1)
    dropped, transitions = advance(activated, later, make)
    assert [t.kind.value for t in transitions] == ["dropped", "uncrossed"]
    assert dropped.active_record is not None and dropped.active_record.cross_certificate is None
    assert dropped.cross_chain_pem == b"" and dropped.issuing_intermediates_der == ()
    # A leaf still carrying it is re-issued without it.
    renew = decide_renewal(facts, desired, dropped, later, jitter_key="k")
    assert renew.reason is RenewalReason.ChainChanged


def test_cross_certificate_round_trips_through_the_ca_secret() -> None:
    prepared, _ = cross_rotation()
    restored = decode_authorities(encode_authorities(prepared), NOW)
    record = restored.prepared_record
    assert (
        record is not None
        and record.cross_certificate == prepared.prepared_record.cross_certificate
    )  # type: ignore[union-attr]
    assert record.cross_signer == prepared.prepared_record.cross_signer  # type: ignore[union-attr]
    stored = record_to_dict(record)
    assert "PRIVATE" not in str(stored) and stored["crossSigner"] == record.cross_signer
    # Without the certificate the signer means nothing, and is not kept.
    assert record_from_dict(stored, record.authority).cross_signer is None


def _write(tmp: Path, name: str, certs: list[x509.Certificate]) -> Path:
    path = tmp / name
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path


@pytest.mark.parametrize("trust", ["old", "new"])
def test_cross_signed_chain_verifies_against_only_old_or_only_new(
    tmp_path: Path, trust: str
) -> None:
    _, activated = cross_rotation()
    old = next(r for r in activated.records if r.state is AuthorityState.Retired).authority
    new = activated.active_authority
    assert new is not None
    at = NOW + timedelta(hours=1, seconds=6)
    leaf = issue_leaf(new, request(), at, cross_chain_pem=activated.cross_chain_pem)
    leaf_cert, *untrusted = x509.load_pem_x509_certificates(leaf.chain_pem)
    anchor = old.certificate if trust == "old" else new.certificate
    args = [OPENSSL, "verify", "-x509_strict", "-purpose", "sslserver",
            "-attime", str(int((at + M).timestamp())),
            "-CAfile", str(_write(tmp_path, "anchor.pem", [anchor])),
            "-untrusted", str(_write(tmp_path, "untrusted.pem", untrusted)),
            str(_write(tmp_path, "leaf.pem", [leaf_cert]))]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    verifier = PolicyBuilder().store(Store([anchor])).time(at + M)
    chain = verifier.build_server_verifier(x509.DNSName("payments.payments.svc")).verify(
        leaf_cert, untrusted
    )
    assert chain[-1] == anchor
    assert len(chain) == (3 if trust == "old" else 2)  # via the cross-certificate, or not
    client = verifier.build_client_verifier().verify(leaf_cert, untrusted)
    assert client.chain[-1] == anchor


def test_without_the_cross_certificate_the_old_anchor_fails(tmp_path: Path) -> None:
    _, activated = cross_rotation()
    old = next(r for r in activated.records if r.state is AuthorityState.Retired).authority
    new = activated.active_authority
    assert new is not None
    at = NOW + timedelta(hours=1, seconds=6)
    leaf = issue_leaf(new, request(), at)  # what a standard rotation issues
    result = subprocess.run(
        [OPENSSL, "verify", "-attime", str(int((at + M).timestamp())),
         "-CAfile", str(_write(tmp_path, "a.pem", [old.certificate])),
         str(_write(tmp_path, "l.pem", [leaf.certificate]))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0


# --------------------------------------------------------------------------- compromised


def test_compromised_rotation_activates_at_once_and_drops_the_old_anchor() -> None:
    aset = started()
    old = aset.active_record
    assert old is not None
    at = NOW + timedelta(hours=1)
    rotated = force_rotate(aset, at, make, 3 * M, mode=RotationMode.compromised)
    assert rotated.prepared_record is None
    active = rotated.active_record
    assert active is not None and active.sha256 != old.sha256 and active.activated_at == at
    assert active.cross_certificate is None and rotated.cross_chain_pem == b""
    gone = rotated.by_sha256[old.sha256]
    assert gone.state is AuthorityState.Retired and gone.compromised_at == at
    assert [c for c in rotated.anchors(at)] == [active.authority.certificate]
    assert record_to_dict(gone)["compromisedAt"]
    # Nothing is pending: no activation to wait for.
    assert pending_activation(rotated) is None


def test_status_says_when_the_next_authority_activates() -> None:
    aset = started()
    status = rotation_status(aset, propagation_delay=2 * M)
    assert status == {"propagationDelay": "2m", "defaultActivateAfter": "3m"}
    half, _ = advance(aset, NOW + LIFE / 2, make)
    scheduled = rotation_status(half, propagation_delay=2 * M)
    assert scheduled["reason"].startswith("scheduled: 5/6")
    assert scheduled["nextAuthority"] == half.prepared_record.serial_hex  # type: ignore[union-attr]
    req = parse_request("prod", {"trustwarden.io/rotate": "r"}, NOW, propagation_delay=2 * M)
    assert req is not None
    forced = force_rotate(aset, NOW, make, req.activate_after, activation_reason=req.plan.reason)
    shown = rotation_status(forced, propagation_delay=2 * M)
    assert shown["activatesAt"] == "2025-06-01T12:03:00Z"
    assert shown["reason"].startswith("default: 3m after the request")
    _, activated = cross_rotation()
    assert rotation_status(activated, propagation_delay=2 * M)["crossSignedBy"]
