"""Issuing X.509-SVIDs and reading back what an existing Secret holds.

Conformance with the SPIFFE X.509-SVID specification
(https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md): exactly one URI SAN
(the SPIFFE ID), basicConstraints CA:false (critical), keyUsage digitalSignature
(critical; plus keyEncipherment for RSA), never keyCertSign/cRLSign, EKU serverAuth and/or
clientAuth. The SPIFFE ID is not put in the subject CN.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from trustwarden.names import (
    PREFIX as ANNOTATION_PREFIX,
)
from trustwarden.sharing import Interned, SharedValues

from ._clock import floor_second, require_utc, to_rfc3339
from ._x509util import (
    CertificateValidity,
    authority_key_id,
    cert_to_pem,
    is_ca,
    load_certificates,
    serial_hex,
    sha256_hex,
    signed_by,
)
from .ca import ORGANIZATION, Authority, check_serial, new_serial
from .errors import (
    CAValidityError,
    InvalidArgumentError,
    InvalidPEMError,
    IssuanceError,
    PKIError,
)
from .keys import (
    MAX_PEM_BYTES,
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    generate_private_key,
    key_algorithm_of,
    private_key_to_pem,
    public_key_der,
)
from .spiffe import MAX_DNS_NAMES, SpiffeID, validate_dns_name

__all__ = [
    "ANNOTATION_PREFIX",
    "DEFAULT_BACKDATE",
    "IssuedLeaf",
    "LeafFacts",
    "LeafRequest",
    "Usage",
    "inspect_leaf",
    "issue_leaf",
    "sign_public_key",
    "ttl_cap",
]

DEFAULT_BACKDATE = timedelta(minutes=5)
MAX_LEAF_CHAIN = 10


class Usage(StrEnum):
    """What a workload uses its certificate for (the CRD ``usages`` values)."""

    server = "server"
    client = "client"


_EKU_OIDS = {
    Usage.server: ExtendedKeyUsageOID.SERVER_AUTH,
    Usage.client: ExtendedKeyUsageOID.CLIENT_AUTH,
}
_USAGE_BY_OID = {oid: usage for usage, oid in _EKU_OIDS.items()}
_ORGANIZATION_ATTR = x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)
_BARE_SUBJECT = x509.Name([_ORGANIZATION_ATTR])


def _key_usage(key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_EXT_KU_RSA = x509.Extension(ExtensionOID.KEY_USAGE, True, _key_usage(key_encipherment=True))
_EXT_KU_OTHER = x509.Extension(ExtensionOID.KEY_USAGE, True, _key_usage(key_encipherment=False))
_EXT_BASIC_CONSTRAINTS = x509.Extension(
    ExtensionOID.BASIC_CONSTRAINTS, True, x509.BasicConstraints(ca=False, path_length=None)
)
_EKU_EXTENSIONS = {
    # Fixed order (server, client) so equal requests give identical certificates.
    usages: x509.Extension(
        ExtensionOID.EXTENDED_KEY_USAGE,
        False,
        x509.ExtendedKeyUsage([_EKU_OIDS[u] for u in Usage if u in usages]),
    )
    for usages in (
        frozenset({Usage.server}),
        frozenset({Usage.client}),
        frozenset({Usage.server, Usage.client}),
    )
}


def _eku_extension(usages: frozenset[Usage]) -> x509.Extension[x509.ExtendedKeyUsage]:
    return _EKU_EXTENSIONS[usages]


@dataclass(frozen=True)
class LeafRequest:
    """Everything that determines a leaf's content (besides issuer, clock and randomness)."""

    spiffe_id: SpiffeID
    dns_names: tuple[str, ...]
    ttl: timedelta
    key_algorithm: KeyAlgorithm
    usages: frozenset[Usage]

    def __post_init__(self) -> None:
        if not isinstance(self.spiffe_id, SpiffeID):
            raise InvalidArgumentError(
                f"spiffe_id must be a SpiffeID, got {type(self.spiffe_id).__name__}"
            )
        if self.ttl <= timedelta(0):
            raise InvalidArgumentError(f"ttl must be positive, got {self.ttl}; set spec.ttl")
        if not self.usages:
            raise InvalidArgumentError(
                "usages is empty; set spec.usages to [server], [client] or [server, client]"
            )
        usages = frozenset(Usage(u) for u in self.usages)
        object.__setattr__(self, "usages", _USAGE_SETS(usages))
        object.__setattr__(self, "key_algorithm", KeyAlgorithm(self.key_algorithm))
        if len(self.dns_names) > MAX_DNS_NAMES:
            raise InvalidArgumentError(
                f"{len(self.dns_names)} DNS names requested; the limit is {MAX_DNS_NAMES}"
            )
        names = tuple(
            validate_dns_name(n, field=f"dnsNames[{i}]") for i, n in enumerate(self.dns_names)
        )
        object.__setattr__(self, "dns_names", tuple(dict.fromkeys(names)))


def ttl_cap(max_ttl: timedelta | None, ca_lifetime: timedelta) -> timedelta:
    """The longest TTL a workload may get: ``min(maxTTL, CA lifetime / 6)``.

    A sixth keeps every leaf inside the window between the successor's activation (5/6 of
    the CA's life) and the CA's own expiry.
    """
    cap = ca_lifetime / 6
    return cap if max_ttl is None else min(max_ttl, cap)


@dataclass(frozen=True)
class IssuedLeaf(CertificateValidity):
    """A freshly issued X.509-SVID and its key, ready for a ``kubernetes.io/tls`` Secret."""

    certificate: x509.Certificate
    chain_pem: bytes = field(repr=False)
    private_key_pem: bytes = field(repr=False)
    serial: int
    spiffe_id: SpiffeID
    issuer_sha256: str
    dns_names: tuple[str, ...] = ()
    key_algorithm: KeyAlgorithm = KeyAlgorithm.ECDSAP256
    usages: frozenset[Usage] = frozenset()

    def to_facts(self, issuer: Authority | None = None) -> LeafFacts:
        """The :class:`LeafFacts` :func:`inspect_leaf` would read back from the Secret this
        leaf is written to, without re-parsing (the operator caches them after issuing)."""
        cert = self.certificate
        uris, spiffe_id = _identity_of((self.spiffe_id.uri,))  # shared with its siblings
        known_issuer = issuer is not None and issuer.sha256 == self.issuer_sha256
        aki = (
            issuer.subject_key_identifier.digest
            if issuer is not None and known_issuer
            else authority_key_id(cert)
        )
        packed, template = pack_der(cert.public_bytes(serialization.Encoding.DER), aki)
        facts = LeafFacts(
            packed_der=packed,
            der_template=template,
            serial=self.serial,
            spiffe_id=spiffe_id or self.spiffe_id,
            uris=uris,
            dns_names=self.dns_names,
            not_before=self.not_before,
            not_after=self.not_after,
            key_algorithm=self.key_algorithm,
            usages=self.usages,
            is_ca=False,
            authority_key_id=aki,
            key_matches=True,
            issuer_sha256=self.issuer_sha256,
            intermediates_der=tuple(
                c.public_bytes(serialization.Encoding.DER)
                for c in x509.load_pem_x509_certificates(self.chain_pem)[1:]
            )
            if self.chain_pem.count(b"-----BEGIN CERTIFICATE-----") > 1
            else (),
        )
        if issuer is not None and known_issuer:
            issued_key, signed_key = _issuer_keys(issuer)
            facts.remember(issued_key, True)
            facts.remember(signed_key, True)  # we signed it just now
        return facts

    def secret_data(self, ca_pem: str | bytes) -> dict[str, bytes]:
        """``tls.crt`` / ``tls.key`` / ``ca.crt`` of the Secret layout in the design."""
        ca = ca_pem.encode("ascii") if isinstance(ca_pem, str) else ca_pem
        return {"tls.crt": self.chain_pem, "tls.key": self.private_key_pem, "ca.crt": ca}

    def annotations(self) -> dict[str, str]:
        """The ``trustwarden.io/*`` annotations that describe this leaf (no key material)."""
        return {
            f"{ANNOTATION_PREFIX}spiffe-id": self.spiffe_id.uri,
            f"{ANNOTATION_PREFIX}serial": self.serial_hex,
            f"{ANNOTATION_PREFIX}not-after": to_rfc3339(self.not_after),
            f"{ANNOTATION_PREFIX}sha256": self.sha256,
            f"{ANNOTATION_PREFIX}trust-domain": self.spiffe_id.trust_domain,
        }


def issue_leaf(
    authority: Authority,
    request: LeafRequest,
    now: datetime,
    *,
    serial: int | None = None,
    private_key: PrivateKey | None = None,
    backdate: timedelta = DEFAULT_BACKDATE,
    cross_chain_pem: bytes = b"",
) -> IssuedLeaf:
    """Sign an X.509-SVID for ``request`` with ``authority``.

    ``cross_chain_pem`` (the authority's cross-certificate during a cross-signed rotation,
    :attr:`AuthoritySet.cross_chain_pem`) goes into ``tls.crt`` after the issuing chain.

    notBefore = max(now - backdate, issuer notBefore); notAfter = min(now + ttl, the
    earliest notAfter on the issuer's path), so a leaf never outlives its issuer.
    ``serial`` and ``private_key`` are injectable (tests, key reuse in simulations).
    """
    now = require_utc(now)
    if now >= authority.path_not_after:
        raise CAValidityError(
            f"authority {authority.serial_hex} (or a CA above it) expired at "
            f"{authority.path_not_after.isoformat()}; it cannot issue at {now.isoformat()}. "
            "Rotate the trust domain's CA (trustwarden ca rotate) or renew the CA Secret"
        )
    if now < authority.not_before:
        raise CAValidityError(
            f"authority {authority.serial_hex} is not valid until "
            f"{authority.not_before.isoformat()}; it cannot issue at {now.isoformat()}"
        )
    if backdate < timedelta(0):
        raise InvalidArgumentError(f"backdate must be >= 0, got {backdate}")
    if private_key is None:
        private_key = generate_private_key(request.key_algorithm)
    else:
        actual = key_algorithm_of(private_key, source="supplied leaf key")
        if actual != request.key_algorithm:
            raise InvalidArgumentError(
                f"the supplied leaf key is {actual.value}, but the request asks for "
                f"{request.key_algorithm.value}; pass a matching key or none"
            )
    serial = new_serial() if serial is None else check_serial(serial, "leaf serial")
    not_before = floor_second(max(now - backdate, authority.not_before))
    not_after = floor_second(min(now + request.ttl, authority.path_not_after))
    if not_after <= not_before:
        raise IssuanceError(
            f"authority {authority.serial_hex} expires at {authority.path_not_after.isoformat()}, "
            "too soon to issue a usable certificate; rotate the CA"
        )
    certificate = sign_public_key(
        authority, request, private_key.public_key(), not_before, not_after, serial
    )
    return IssuedLeaf(
        certificate=certificate,
        chain_pem=cert_to_pem(certificate) + authority.issuing_chain_pem + cross_chain_pem,
        private_key_pem=private_key_to_pem(private_key),
        serial=serial,
        spiffe_id=request.spiffe_id,
        issuer_sha256=authority.sha256,
        dns_names=request.dns_names,
        key_algorithm=request.key_algorithm,
        usages=request.usages,
    )


def sign_public_key(
    authority: Authority,
    request: LeafRequest,
    public_key: PublicKey,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.Certificate:
    """Sign an X.509-SVID for a public key whose private half trustwarden never sees (a
    kubelet's key for a PodCertificateRequest). The validity is the caller's decision."""
    if request.dns_names:
        subject = x509.Name(
            [
                _ORGANIZATION_ATTR,
                x509.NameAttribute(NameOID.COMMON_NAME, request.dns_names[0][:64]),
            ]
        )
    else:
        subject = _BARE_SUBJECT
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(request.spiffe_id.uri)]
    san.extend(x509.DNSName(name) for name in request.dns_names)
    # Built in one constructor call from pre-made Extension objects: the fluent setters
    # copy the builder a dozen times and are a measurable share of the issue path.
    # The constructor takes naive UTC datetimes, exactly what the setters store.
    builder = x509.CertificateBuilder(
        issuer_name=authority.certificate.subject,
        subject_name=subject,
        public_key=public_key,
        serial_number=serial,
        not_valid_before=not_before.replace(tzinfo=None),
        not_valid_after=not_after.replace(tzinfo=None),
        extensions=[
            _EXT_BASIC_CONSTRAINTS,
            _EXT_KU_RSA if request.key_algorithm.is_rsa else _EXT_KU_OTHER,
            _eku_extension(request.usages),
            x509.Extension(
                ExtensionOID.SUBJECT_KEY_IDENTIFIER,
                False,
                x509.SubjectKeyIdentifier.from_public_key(public_key),
            ),
            authority.authority_key_identifier_extension,
            x509.Extension(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False, x509.SubjectAlternativeName(san)
            ),
        ],
    )
    certificate = builder.sign(authority.private_key, authority.signature_hash)
    return certificate


# --------------------------------------------------------------------------- inspection


@functools.lru_cache(maxsize=256)
def _cache_keys(issuer_der: bytes) -> tuple[bytes, bytes]:
    """The keys of LeafFacts' answer cache for one issuer: (issued_by, signed_by). One pair
    per issuer, shared by every leaf's cache, so 100,000 leaves do not each hold copies of
    the issuer's DER (about 1.1 KiB per leaf before)."""
    digest = hashlib.sha256(issuer_der).digest()
    return digest, b"sig:" + digest


# (issuer key, answer) pairs: keys are per issuer, so only CA rotations add new ones.
_ANSWERS: Interned[tuple[bytes, bool]] = Interned(1024)
# Per issuer key id, the first leaf DER seen: the dictionary its later leaves deflate against.
_DER_TEMPLATES: SharedValues[bytes | None, bytes] = SharedValues(1024)
_DER_WBITS = -11  # raw deflate, a 2 KiB window: a leaf and its template fit in it


def pack_der(der: bytes, issuer_key_id: bytes | None) -> tuple[bytes, bytes]:
    """`der` deflated against an earlier leaf of the same issuer, and that leaf (shared by
    every leaf packed against it); (der, b"") when that does not make it smaller."""
    template = _DER_TEMPLATES.get(issuer_key_id, lambda: der)
    if template is der or len(template) > 2048:
        return der, b""
    deflate = zlib.compressobj(6, zlib.DEFLATED, _DER_WBITS, 1, zdict=template)
    packed = deflate.compress(der) + deflate.flush()
    return (packed, template) if len(packed) < len(der) else (der, b"")


# An issuer's key identifier, one copy for all the leaves it signed (only rotations add one).
_SHARED_KEY_IDS: Interned[bytes] = Interned(1024)
# A leaf's URIs and the SPIFFE ID they name, shared by every leaf of the same workload
# identity (the pods of a ServiceAccount): 190 bytes per cached Secret otherwise.
_IDENTITIES: SharedValues[tuple[str, ...], tuple[tuple[str, ...], SpiffeID | None]] = SharedValues(
    65_536
)


def _identity_of(uris: tuple[str, ...]) -> tuple[tuple[str, ...], SpiffeID | None]:
    def parsed() -> tuple[tuple[str, ...], SpiffeID | None]:
        if len(uris) == 1:
            try:
                return uris, SpiffeID.parse(uris[0])
            except PKIError:
                pass
        return uris, None

    return _IDENTITIES.get(uris, parsed)


def _issuer_keys(issuer: x509.Certificate | Authority) -> tuple[bytes, bytes]:
    cert = issuer.certificate if isinstance(issuer, Authority) else issuer
    return _cache_keys(cert.public_bytes(serialization.Encoding.DER))


# The few distinct usage sets, shared by every leaf that has one (a frozenset is ~200 bytes).
_USAGE_SETS: Interned[frozenset[Usage]] = Interned(64)


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """What an existing Secret's certificate says, for the renewal decision.

    The certificates are kept as DER and parsed again only when asked for: the operator keeps
    facts for every managed Secret, and a parsed certificate whose extensions and names have
    been read costs about 5 KiB, ten times its DER. The leaf's DER is kept deflated against a
    sibling's (`pack_der`): leaves of one issuer share most of their bytes, and 548 bytes of
    an ECDSA leaf become about 210."""

    packed_der: bytes = field(repr=False, compare=False)  # compared as `der` (__eq__)
    serial: int
    spiffe_id: SpiffeID | None
    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_algorithm: KeyAlgorithm | None
    usages: frozenset[Usage]
    is_ca: bool
    authority_key_id: bytes | None
    key_matches: bool
    issuer_sha256: str | None = None
    intermediates_der: tuple[bytes, ...] = field(default=(), repr=False)
    # Signature checks are the expensive part of a renewal decision; remember the answers,
    # by a digest of the issuer's DER (a parsed issuer from the Secret's own chain would be
    # kept alive; see _cache_keys).
    # (key, answer) pairs, each pair shared by every leaf with the same answer for the same
    # issuer (_answer): a dict per leaf cost 184 bytes for its one or two entries.
    _answers: tuple[tuple[bytes, bool], ...] = field(
        default=(), repr=False, compare=False, hash=False
    )
    der_template: bytes = field(default=b"", repr=False, compare=False)  # b"": not packed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LeafFacts):
            return NotImplemented
        mine = tuple(getattr(self, name) for name in _LEAF_COMPARED)
        theirs = tuple(getattr(other, name) for name in _LEAF_COMPARED)
        return mine == theirs and self.der == other.der

    @property
    def der(self) -> bytes:
        if not self.der_template:
            return self.packed_der
        inflate = zlib.decompressobj(_DER_WBITS, zdict=self.der_template)
        return inflate.decompress(self.packed_der) + inflate.flush()

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def sha256(self) -> str:
        """The leaf's fingerprint (of its DER), computed when asked: kept as a hex string it
        cost 113 bytes per cached Secret."""
        return hashlib.sha256(self.der).hexdigest()

    def _cached(self, key: bytes) -> bool | None:
        for known, answer in self._answers:
            if known is key or known == key:
                return answer
        return None

    def remember(self, key: bytes, answer: bool) -> None:
        """Record one answer of `issued_by` / `signed_by` (the instance is otherwise frozen)."""
        if self._cached(key) is None:
            object.__setattr__(self, "_answers", (*self._answers, _ANSWERS((key, answer))))

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return tuple(x509.load_der_x509_certificate(der) for der in self.intermediates_der)

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def issued_by(self, issuer: x509.Certificate | Authority) -> bool:
        """True when ``issuer`` issued this leaf: same issuer name and matching key
        identifiers (AKI = issuer SKI), as path builders match them; the signature is
        checked only when a key identifier is missing. This answers "which authority?" for
        renewal; it is not a trust decision (verifiers do that)."""
        cert = issuer.certificate if isinstance(issuer, Authority) else issuer
        key = _issuer_keys(cert)[0]
        answer = self._cached(key)
        if answer is None:
            answer = _issued(self.certificate, self.authority_key_id, cert)
            self.remember(key, answer)
        return answer

    def signed_by(self, issuer: x509.Certificate | Authority) -> bool:
        """True only when ``issuer``'s key verifies this leaf's signature (and the names
        chain). Unlike :meth:`issued_by`, this is evidence: a look-alike that copies the
        issuer name and key identifiers fails it."""
        cert = issuer.certificate if isinstance(issuer, Authority) else issuer
        key = _issuer_keys(cert)[1]
        answer = self._cached(key)
        if answer is None:
            answer = signed_by(self.certificate, cert)
            self.remember(key, answer)
        return answer


# What LeafFacts.__eq__ compares besides the DER (the packing of equal DER can differ).
_LEAF_COMPARED = tuple(f.name for f in dataclasses.fields(LeafFacts) if f.compare)


def _issued(leaf: x509.Certificate, aki: bytes | None, cert: x509.Certificate) -> bool:
    if leaf.issuer != cert.subject:
        return False
    ski = _subject_key_id(cert)
    if aki is not None and ski is not None:
        return aki == ski
    return signed_by(leaf, cert)


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def inspect_leaf(
    chain_pem: bytes,
    key_pem: bytes | None,
    *,
    issuers: Iterable[x509.Certificate | Authority] = (),
    source: str = "Secret tls.crt",
) -> LeafFacts:
    """Parse ``tls.crt`` (leaf first) and ``tls.key`` into :class:`LeafFacts`.

    Malformed input raises :class:`InvalidPEMError`; callers treat that as tampering.
    ``issuers`` (e.g. every authority of the trust domain) resolve ``issuer_sha256``.
    A missing key gives ``key_matches=False``.
    """
    certs = load_certificates(chain_pem, source=source, max_certs=MAX_LEAF_CHAIN)
    leaf = certs[0]
    try:
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
            dns_names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            uris, dns_names = (), ()
        try:
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            usages = frozenset(_USAGE_BY_OID[o] for o in eku if o in _USAGE_BY_OID)
        except x509.ExtensionNotFound:
            usages = frozenset()
        leaf_is_ca = is_ca(leaf)
        aki = authority_key_id(leaf)
        public_der = public_key_der(leaf.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidPEMError(
            f"{source}: the certificate has malformed extensions or key ({str(exc)[:120]}); "
            "delete the Secret so it is reissued"
        ) from None
    uris, spiffe_id = _identity_of(uris)
    try:
        key_algorithm: KeyAlgorithm | None = key_algorithm_of(leaf.public_key())
    except PKIError:
        key_algorithm = None

    key_matches = False
    if key_pem is not None:
        if isinstance(key_pem, str):
            key_pem = key_pem.encode()
        if len(key_pem) > MAX_PEM_BYTES:
            raise InvalidPEMError(f"{source}: tls.key is larger than {MAX_PEM_BYTES} bytes")
        try:
            key = serialization.load_pem_private_key(bytes(key_pem), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidPEMError(
                f"{source}: tls.key cannot be parsed ({str(exc)[:120]}); delete the Secret so "
                "it is reissued"
            ) from None
        try:
            key_matches = public_key_der(key.public_key()) == public_der
        except (ValueError, TypeError):
            key_matches = False

    issuer: x509.Certificate | None = None
    for candidate in (*issuers, *certs[1:2]):
        cert = candidate.certificate if isinstance(candidate, Authority) else candidate
        if _issued(leaf, aki, cert):
            issuer = cert
            break
    packed, template = pack_der(leaf.public_bytes(serialization.Encoding.DER), aki)
    facts = LeafFacts(
        packed_der=packed,
        der_template=template,
        serial=leaf.serial_number,
        spiffe_id=spiffe_id,
        uris=uris,
        dns_names=dns_names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        key_algorithm=key_algorithm,
        usages=_USAGE_SETS(usages),
        is_ca=leaf_is_ca,
        authority_key_id=None if aki is None else _SHARED_KEY_IDS(aki),
        key_matches=key_matches,
        issuer_sha256=sha256_hex(issuer) if issuer is not None else None,
        intermediates_der=tuple(c.public_bytes(serialization.Encoding.DER) for c in certs[1:]),
    )
    if issuer is not None:
        facts.remember(_issuer_keys(issuer)[0], True)
    return facts
