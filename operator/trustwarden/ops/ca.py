"""`trustwarden ca status` and `trustwarden ca rotate`: authorities from the TrustDomain
status, their coverage in the namespace bundles, and rotation progress.

Contract with the operator for a rotation: annotations ``trustwarden.io/rotate=<new id>``,
optionally ``trustwarden.io/activate-after=<duration>`` (default: the operator's
``status.rotation.defaultActivateAfter``, derived from its propagation delay) and
``trustwarden.io/rotation-mode`` (``cross-sign`` or ``compromised``) on the TrustDomain make it
prepare a new authority (``Prepared``), publish it in every entitled bundle, and activate it
after the duration and only once every bundle holds it (``compromised``: at once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any

from trustwarden.names import (
    ACTIVATE_AFTER_ANNOTATION,
    BUNDLE_CONFIGMAP,
    ROTATE_ANNOTATION,
    ROTATION_MODE_ANNOTATION,
)
from trustwarden.pki._x509util import sha256_hex
from trustwarden.pki.durations import format_duration, parse_duration
from trustwarden.pki.errors import PKIError
from trustwarden.pki.propagation import (
    DEFAULT_PROPAGATION_DELAY,
    RotationMode,
    activation_risk,
    compromised_warning,
    default_activate_after,
)

from .errors import UsageError
from .format import Column, human_duration, render_table, rfc3339, short_time, truncate
from .model import (
    Body,
    annotations_of,
    is_managed,
    load_pem_certs,
    name_of,
    namespace_of,
    parse_time,
)

STATE_ORDER = {"Active": 0, "Prepared": 1, "Retired": 2}


@dataclass(frozen=True)
class AuthorityView:
    serial: str
    state: str
    sha256: str
    not_before: datetime | None
    not_after: datetime | None


@dataclass(frozen=True)
class DomainView:
    name: str
    trust_domain: str
    ca_kind: str
    authorities: tuple[AuthorityView, ...]
    conditions: tuple[Mapping[str, Any], ...]
    namespaces: int  # status.namespaces: how many namespaces are entitled to the anchors
    rotation_request: str | None
    # status.rotation, as the operator reports it (empty before it does)
    rotation: Mapping[str, Any] = dataclass_field(default_factory=dict)

    @property
    def propagation_delay(self) -> timedelta:
        return _status_duration(self.rotation.get("propagationDelay")) or DEFAULT_PROPAGATION_DELAY

    @property
    def default_activate_after(self) -> timedelta:
        """What the operator uses when no ``--activate-after`` is given."""
        return _status_duration(
            self.rotation.get("defaultActivateAfter")
        ) or default_activate_after(self.propagation_delay)

    @property
    def active(self) -> AuthorityView | None:
        return next((a for a in self.authorities if a.state == "Active"), None)


def domain_view(body: Body) -> DomainView:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ca = spec.get("ca") or {}
    kind = next((k for k in ("selfSigned", "secretRef", "external") if ca.get(k) is not None), "")
    authorities = tuple(
        sorted(
            (
                AuthorityView(
                    serial=str(a.get("serial") or ""),
                    state=str(a.get("state") or ""),
                    sha256=str(a.get("sha256") or "").lower(),
                    not_before=parse_time(a.get("notBefore")),
                    not_after=parse_time(a.get("notAfter")),
                )
                for a in status.get("authorities") or ()
            ),
            key=lambda a: (STATE_ORDER.get(a.state, 9), a.not_before or datetime.max, a.serial),
        )
    )
    return DomainView(
        name=name_of(body),
        trust_domain=str(spec.get("trustDomain") or ""),
        ca_kind=kind,
        authorities=authorities,
        conditions=tuple(dict(c) for c in status.get("conditions") or ()),
        namespaces=int(status.get("namespaces") or 0),
        rotation_request=annotations_of(body).get(ROTATE_ANNOTATION),
        rotation=dict(status.get("rotation") or {}),
    )


def _status_duration(value: object) -> timedelta | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_duration(value, field="status.rotation")
    except PKIError:
        return None


@dataclass(frozen=True)
class BundleView:
    namespace: str
    anchors: frozenset[str]  # sha256 of each anchor under <trustDomain>.pem


def bundle_views(bundles: Iterable[Body], trust_domain: str) -> list[BundleView]:
    """The managed trustwarden-bundle ConfigMaps that carry ``<trustDomain>.pem``."""
    key = f"{trust_domain}.pem"
    out = []
    for body in bundles:
        data = body.get("data") or {}
        if name_of(body) != BUNDLE_CONFIGMAP or not is_managed(body) or key not in data:
            continue
        shas = frozenset(sha256_hex(c) for c in load_pem_certs(data.get(key)))
        out.append(BundleView(namespace_of(body), shas))
    return sorted(out, key=lambda b: b.namespace)


# --------------------------------------------------------------------------- status


def status_json(domain: DomainView, bundles: Sequence[BundleView]) -> str:
    doc = {
        "name": domain.name,
        "trustDomain": domain.trust_domain,
        "ca": domain.ca_kind,
        "conditions": list(domain.conditions),
        "authorities": [
            {
                "serial": a.serial,
                "state": a.state,
                "sha256": a.sha256,
                "notBefore": rfc3339(a.not_before) or None,
                "notAfter": rfc3339(a.not_after) or None,
                "bundles": [b.namespace for b in bundles if a.sha256 in b.anchors],
            }
            for a in domain.authorities
        ],
        "bundles": [
            {
                "namespace": b.namespace,
                "authorities": [a.serial for a in domain.authorities if a.sha256 in b.anchors],
            }
            for b in bundles
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def _held(authority: AuthorityView, bundle: BundleView) -> str:
    """``yes``; ``MISSING`` for an Active or Prepared anchor a bundle lacks; ``-`` for a
    Retired one (dropped once its last certificate expired)."""
    if authority.sha256 in bundle.anchors:
        return "yes"
    return "-" if authority.state == "Retired" else "MISSING"


def _coverage(authority: AuthorityView, bundles: Sequence[BundleView], expected: int) -> str:
    held = sum(1 for b in bundles if authority.sha256 in b.anchors)
    return f"{held}/{max(expected, len(bundles))}"


def format_status(
    domain: DomainView,
    bundles: Sequence[BundleView],
    now: datetime,
    *,
    wide: bool = False,
    width: int | None = 80,
) -> str:
    lines = [
        f"TrustDomain {domain.name}: trust domain {domain.trust_domain}, CA {domain.ca_kind or '?'}"
    ]
    if domain.rotation_request:
        lines.append(f"Last rotation request: {domain.rotation_request}")
    lines.append("")
    lines.append("Conditions:")
    if domain.conditions:
        rows = [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                str(c.get("message", "")),
            ]
            for c in domain.conditions
        ]
        cond_cols = (Column("  TYPE"), Column("STATUS"), Column("REASON"), Column("MESSAGE", 20))
        rows = [["  " + r[0], *r[1:]] for r in rows]
        lines.append(render_table(cond_cols, rows, None if wide else width).rstrip("\n"))
    else:
        lines.append("  (none reported yet: is the operator running?)")
    lines.append("")
    if not domain.authorities:
        lines.append(
            "Authorities: none"
            + (
                " (external anchors only: nothing to issue or rotate)"
                if domain.ca_kind == "external"
                else " reported yet"
            )
        )
    else:
        lines.append("Authorities:")
        rows = []
        for a in domain.authorities:
            serial = a.serial if wide else truncate(a.serial, 17)
            when = rfc3339 if wide else short_time
            rows.append(
                [
                    "  " + serial,
                    a.state,
                    when(a.not_before) or "-",
                    when(a.not_after) or "-",
                    a.sha256 if wide else a.sha256[:12],
                    _coverage(a, bundles, domain.namespaces),
                ]
            )
        cols = (
            Column("  SERIAL"),
            Column("STATE"),
            Column("NOT-BEFORE"),
            Column("NOT-AFTER"),
            Column("SHA256"),
            Column("BUNDLES"),
        )
        lines.append(render_table(cols, rows, None).rstrip("\n"))
        active = domain.active
        if active is not None and active.not_after is not None:
            lines.append(f"  active authority expires in {human_duration(active.not_after - now)}")
        pending = format_pending(domain)
        if pending:
            lines.append(pending)
        if domain.rotation.get("crossSignedBy"):
            lines.append(
                f"  active authority is cross-signed by {domain.rotation['crossSignedBy']}: new "
                "certificates verify against the old anchor too"
            )
    lines.append("")
    expected = max(domain.namespaces, len(bundles))
    lines.append(
        f"Bundle coverage: {len(bundles)} of {expected} entitled namespaces hold a bundle "
        "with this domain"
    )
    if not bundles:
        lines.append("  (no namespace bundle carries this domain's anchors yet)")
    else:
        headers = [Column("  NAMESPACE", min_width=11)] + [
            Column(truncate(a.serial, 12)) for a in domain.authorities[:4]
        ]
        rows = [
            ["  " + b.namespace] + [_held(a, b) for a in domain.authorities[:4]] for b in bundles
        ]
        lines.append(render_table(headers, rows, None if wide else width).rstrip("\n"))
        if len(domain.authorities) > 4:
            lines.append("  (first 4 authorities shown; -o json lists every one)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- rotate


def check_rotatable(domain: DomainView) -> None:
    if domain.ca_kind == "external":
        raise UsageError(
            f"TrustDomain {domain.name} holds external anchors only; there is no CA to rotate "
            "(update spec.ca.external.bundle instead)"
        )
    if domain.ca_kind == "secretRef":
        raise UsageError(
            f"TrustDomain {domain.name} uses a bring-your-own CA (spec.ca.secretRef); rotate it "
            "by writing the new CA into that Secret"
        )
    if domain.active is None:
        raise UsageError(
            f"TrustDomain {domain.name} has no Active authority yet; wait until it is Ready "
            f"(trustwarden ca status {domain.name})"
        )


def rotation_request_id(now: datetime, previous: str | None) -> str:
    request = f"rotate-{int(now.timestamp())}"
    return request if request != previous else f"{request}-1"


def rotate_patch(
    request: str, activate_after: str | None, mode: RotationMode = RotationMode.standard
) -> dict[str, Any]:
    """A merge patch: ``None`` removes what an earlier rotation left (the operator then
    derives the default activation delay, and rotates in the standard mode)."""
    return {
        "metadata": {
            "annotations": {
                ROTATE_ANNOTATION: request,
                ACTIVATE_AFTER_ANNOTATION: activate_after,
                ROTATION_MODE_ANNOTATION: None if mode is RotationMode.standard else mode.value,
            }
        }
    }


@dataclass(frozen=True)
class RotationChoice:
    """What `trustwarden ca rotate` will ask for, and what it risks."""

    mode: RotationMode
    activate_after: timedelta
    explicit: bool  # --activate-after was given
    default: timedelta  # the operator's default activation delay
    propagation_delay: timedelta
    risk: str | None  # a shorter delay than the default: needs confirmation or --force
    warning: str | None  # said plainly before anything happens (--compromised)

    @property
    def annotation(self) -> str | None:
        return format_duration(self.activate_after) if self.explicit else None


def choose_rotation(
    domain: DomainView,
    activate_after: timedelta | None,
    *,
    cross_sign: bool = False,
    compromised: bool = False,
) -> RotationChoice:
    if cross_sign and compromised:
        raise UsageError(
            "give --cross-sign or --compromised, not both: a compromised key must not vouch "
            "for its successor"
        )
    if compromised and activate_after is not None:
        raise UsageError("--compromised activates the new authority at once; drop --activate-after")
    mode = (
        RotationMode.compromised
        if compromised
        else RotationMode.cross_sign
        if cross_sign
        else RotationMode.standard
    )
    default = domain.default_activate_after
    delay = (
        timedelta(0) if compromised else (activate_after if activate_after is not None else default)
    )
    risk = activation_risk(delay, domain.propagation_delay, floor=default, mode=mode)
    warning = compromised_warning(domain.propagation_delay) if compromised else None
    return RotationChoice(
        mode,
        delay,
        activate_after is not None,
        default,
        domain.propagation_delay,
        risk,
        warning,
    )


@dataclass(frozen=True)
class RotationProgress:
    new: AuthorityView | None  # the authority the rotation created, once reported
    holding: tuple[str, ...]  # namespaces whose bundle holds the new anchor
    missing: tuple[str, ...]  # entitled namespaces (bundles with the domain) without it
    expected: int  # max(bundles carrying the domain, status.namespaces)

    @property
    def activated(self) -> bool:
        return self.new is not None and self.new.state == "Active"

    @property
    def published(self) -> bool:
        return self.new is not None and not self.missing and len(self.holding) >= self.expected


def rotation_progress(
    domain: DomainView, bundles: Sequence[BundleView], before: Iterable[str]
) -> RotationProgress:
    """``before``: the sha256 of every authority that existed when the rotation was asked."""
    known = set(before)
    new = next(
        (a for a in domain.authorities if a.sha256 not in known and a.state != "Retired"), None
    )
    if new is None:
        return RotationProgress(None, (), tuple(b.namespace for b in bundles), len(bundles))
    holding = tuple(b.namespace for b in bundles if new.sha256 in b.anchors)
    missing = tuple(b.namespace for b in bundles if new.sha256 not in b.anchors)
    return RotationProgress(new, holding, missing, max(domain.namespaces, len(bundles)))


def format_pending(domain: DomainView) -> str | None:
    """One line for ``ca status``: when the Prepared authority activates and why then."""
    at, reason = domain.rotation.get("activatesAt"), domain.rotation.get("reason")
    if not at:
        return None
    return (
        f"  next authority {domain.rotation.get('nextAuthority', '?')} activates at {at}: {reason}"
    )


def default_rotate_timeout(activate_after: timedelta) -> timedelta:
    return activate_after + timedelta(minutes=2)
