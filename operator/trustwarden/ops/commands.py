"""The command flows: read through an :class:`OpsPort`, decide with the pure modules, print.

Every flow returns the process exit status. Clock, sleep and the confirmation prompt are
injected, so the flows run in unit tests against a fake port without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from trustwarden.names import (
    BUNDLE_CONFIGMAP,
    IDENTITY_LABEL,
    MANAGED_BY,
    MANAGER,
    OPERATOR_NAMESPACE,
    SECRET_SELECTOR,
)
from trustwarden.pki.durations import parse_duration
from trustwarden.pki.errors import PKIError
from trustwarden.pki.propagation import RotationMode

from . import ca as ca_mod
from . import inventory as inv
from . import revoke as rev
from . import verify as ver
from .errors import (
    AbortedError,
    ConflictError,
    DeadlineError,
    ForbiddenError,
    NotFoundError,
    OpsError,
    UsageError,
)
from .format import human_duration, rfc3339, truncate
from .model import annotations_of, is_managed, secret_bytes
from .port import OpsPort


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    port: OpsPort
    out: TextIO
    err: TextIO
    confirm: Callable[[str], bool]
    clock: Callable[[], datetime] = _utcnow
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    width: int | None = 80
    poll: float = 0.5

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=self.err, flush=True)


def parse_duration_arg(text: str, flag: str) -> timedelta:
    """A Go duration (``90s``, ``10m``, ``1h30m``), or a bare number of seconds."""
    stripped = text.strip()
    try:
        if stripped.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(stripped))
        return parse_duration(stripped, field=flag)
    except (PKIError, ValueError) as exc:
        raise UsageError(str(exc)) from None


# --------------------------------------------------------------------------- inventory


def inventory(
    ctx: Context,
    *,
    namespace: str | None,
    output: str = "table",
    expiring_within: timedelta | None = None,
    owner: str | None = None,
    operator_namespace: str = OPERATOR_NAMESPACE,
) -> int:
    """``namespace=None``: every namespace (-A)."""
    secrets = ctx.port.list_secrets(namespace, SECRET_SELECTOR)
    identities = ctx.port.list_identities(namespace)
    bundles = ctx.port.list_bundles(namespace)
    try:
        domains = ctx.port.list_trust_domains()
    except ForbiddenError as exc:
        ctx.warn(f"{exc}; the AUTHORITY column shows only issuer fingerprints")
        domains = []
    now = ctx.clock()
    rows = inv.build_rows(
        secrets, identities, domains, bundles, now, operator_namespace=operator_namespace
    )
    rows += inv.build_pod_certificate_rows(
        ctx.port.list_pod_certificate_requests(namespace), identities, domains, bundles, now
    )
    rows = inv.filter_rows(rows, now, expiring_within=expiring_within, owner=owner)
    if output == "json":
        ctx.out.write(inv.format_json(rows, now))
    elif output == "csv":
        ctx.out.write(inv.format_csv(rows))
    elif not rows:
        where = f"namespace {namespace}" if namespace else "any namespace"
        filtered = " matching the filters" if expiring_within or owner else ""
        print(f"No certificates found{filtered} in {where}.", file=ctx.err)
    else:
        ctx.out.write(inv.format_table(rows, now, wide=output == "wide", width=ctx.width))
    ctx.out.flush()
    return inv.exit_code(rows)


# --------------------------------------------------------------------------- verify


def verify(
    ctx: Context,
    *,
    namespace: str | None,
    secret_name: str | None,
    from_file: tuple[str, bytes] | None = None,
) -> int:
    """``namespace=None``: the saved Secret's namespace, else the context's."""
    if from_file is not None:
        path, content = from_file
        source = ver.parse_file(content, path)
        namespace = namespace or source.namespace or ctx.port.default_namespace()
        if source.namespace and source.namespace != namespace:
            ctx.warn(
                f"{path} is a Secret of namespace {source.namespace}; checking it against the "
                f"bundle of namespace {namespace} (-n)"
            )
        chain, key, annotations = source.chain_pem, source.key_pem, source.annotations
        label = f"{path}" + (f" (Secret {source.name})" if source.name else "")
        key_expected = source.is_secret
    else:
        assert secret_name is not None
        namespace = namespace or ctx.port.default_namespace()
        secret = ctx.port.get_secret(namespace, secret_name)
        if secret is None:
            raise NotFoundError(
                f"Secret {namespace}/{secret_name} not found; list certificates with: "
                f"trustwarden inventory -n {namespace}"
            )
        if not is_managed(secret):
            ctx.warn(f"Secret {namespace}/{secret_name} is not managed by trustwarden")
        chain, key = secret_bytes(secret, "tls.crt"), secret_bytes(secret, "tls.key")
        annotations = annotations_of(secret)
        label = f"Secret {namespace}/{secret_name}"
        key_expected = True
    bundle = ctx.port.get_bundle(namespace)
    data = ver.VerifyInput(
        chain_pem=chain,
        key_pem=key,
        annotations=annotations,
        bundle=None if bundle is None else dict(bundle.get("data") or {}),
        source=label,
        bundle_source=f"ConfigMap {namespace}/{BUNDLE_CONFIGMAP}",
        key_expected=key_expected,
    )
    checks = ver.verify(data, ctx.clock())
    for check in checks:
        ctx.say(check.line)
    failed = [c.name for c in checks if c.failed]
    if failed:
        print(f"{label}: {len(failed)} check(s) failed: {', '.join(failed)}", file=ctx.err)
        return 1
    return 0


# --------------------------------------------------------------------------- revoke


def select_targets(
    ctx: Context,
    namespace: str,
    *,
    identity: str | None = None,
    pod: str | None = None,
    serial: str | None = None,
) -> list[rev.Target]:
    if identity is not None:
        secrets = ctx.port.list_secrets(
            namespace, f"{MANAGED_BY}={MANAGER},{IDENTITY_LABEL}={identity}"
        )
        return rev.select_by_identity(secrets, namespace, identity)
    if pod is not None:
        pod_body = ctx.port.get_pod(namespace, pod)
        if pod_body is None:
            raise NotFoundError(f"pod {namespace}/{pod} not found")
        secret_name = rev.pod_secret_name(pod_body)
        secret = ctx.port.get_secret(namespace, secret_name) if secret_name else None
        return [rev.select_by_pod(pod_body, secret)]
    if serial is not None:
        rev.parse_serial(serial)  # reject bad input before listing
        return rev.select_by_serial(
            ctx.port.list_secrets(namespace, f"{MANAGED_BY}={MANAGER}"), namespace, serial
        )
    raise UsageError("give one of --identity, --pod or --serial")


def revoke(
    ctx: Context,
    *,
    namespace: str,
    reason: str,
    identity: str | None = None,
    pod: str | None = None,
    serial: str | None = None,
    yes: bool = False,
    wait: bool = True,
    timeout: timedelta = timedelta(seconds=60),
) -> int:
    reason = rev.check_reason(reason)
    targets = select_targets(ctx, namespace, identity=identity, pod=pod, serial=serial)
    ctx.say(f"Revoking {len(targets)} certificate(s) in namespace {namespace}:")
    for t in targets:
        ctx.say(f"  {t.name}  identity {t.identity or '-'}  serial {t.serial or '?'}")
    ctx.say(f"Reason: {reason}")
    ctx.say(
        "The operator lists each serial in the trust domain's CRL at once and writes a fresh "
        "key and certificate into the same Secret."
    )
    if not yes and not ctx.confirm("Revoke now? [y/N] "):
        raise AbortedError("aborted: nothing was revoked")
    for t in targets:
        try:
            ctx.port.patch_secret(t.namespace, t.name, rev.revoke_patch(reason, t.resource_version))
        except ConflictError:
            current = ctx.port.get_secret(t.namespace, t.name)
            now_serial = rev.current_serial(current) if current else ""
            if current is None or now_serial != t.serial:
                raise ConflictError(
                    f"Secret {t.ref} changed while revoking (serial {t.serial} is now "
                    f"{now_serial or 'gone'}): re-run the command to revoke what it holds now"
                ) from None
            ctx.port.patch_secret(t.namespace, t.name, rev.revoke_patch(reason))
        ctx.say(f"secret/{t.name} annotated for revocation")
    if not wait:
        ctx.say(
            f"Not waiting. Check with: trustwarden inventory -n {namespace} (state revoked "
            "until replaced)"
        )
        return 0
    return _wait_revoked(ctx, namespace, targets, timeout)


def _wait_revoked(
    ctx: Context, namespace: str, targets: list[rev.Target], timeout: timedelta
) -> int:
    deadline = ctx.monotonic() + timeout.total_seconds()
    replaced: dict[str, str] = {}
    listed: set[str] = set()
    pending = list(targets)
    while True:
        bundle = None
        for t in list(pending):
            if t.name not in replaced:
                new = rev.replacement(t, ctx.port.get_secret(t.namespace, t.name))
                if new is not None:
                    replaced[t.name] = new
            if t.name in replaced and not t.serial:
                listed.add(t.name)  # it held no readable certificate: nothing to list
            if t.name in replaced and t.name not in listed:
                if bundle is None:
                    bundle = ctx.port.get_bundle(namespace)
                if rev.crl_lists(bundle, t.trust_domain, t.serial):
                    listed.add(t.name)
            if t.name in replaced and t.name in listed:
                new = replaced[t.name] or "(Secret deleted)"
                ctx.say(f"{t.ref}: {t.serial or '?'} → {new}  (old serial listed in the CRL)")
                pending.remove(t)
        if not pending:
            ctx.say(f"Revoked {len(targets)} certificate(s).")
            return 0
        if ctx.monotonic() >= deadline:
            waiting = []
            for t in pending:
                why = "CRL update" if t.name in replaced else "a new certificate"
                waiting.append(f"{t.ref} (serial {t.serial}: waiting for {why})")
            raise DeadlineError(
                f"timed out after {human_duration(timeout)}: {'; '.join(waiting)}. The "
                "trustwarden.io/revoke annotation stays until the operator acts; is it running? "
                "(check its logs; kubectl get lease -n trustwarden-system)"
            )
        ctx.sleep(ctx.poll)


# --------------------------------------------------------------------------- ca


def _get_domain(ctx: Context, name: str) -> ca_mod.DomainView:
    body = ctx.port.get_trust_domain(name)
    if body is None:
        # Accept the SPIFFE trust domain name too (prod.example.org for TrustDomain prod).
        matches = [
            b
            for b in ctx.port.list_trust_domains()
            if (b.get("spec") or {}).get("trustDomain") == name
        ]
        if len(matches) != 1:
            raise NotFoundError(
                f"TrustDomain {name} not found; list them with: kubectl get trustdomains"
            )
        body = matches[0]
    return ca_mod.domain_view(body)


def ca_status(ctx: Context, *, name: str, output: str = "table") -> int:
    domain = _get_domain(ctx, name)
    bundles = ca_mod.bundle_views(ctx.port.list_bundles(None), domain.trust_domain)
    if output == "json":
        ctx.out.write(ca_mod.status_json(domain, bundles))
    else:
        ctx.out.write(
            ca_mod.format_status(
                domain, bundles, ctx.clock(), wide=output == "wide", width=ctx.width
            )
        )
    ctx.out.flush()
    ready = next((c for c in domain.conditions if c.get("type") == "Ready"), None)
    return 0 if ready is not None and ready.get("status") == "True" else 1


def ca_rotate(
    ctx: Context,
    *,
    name: str,
    activate_after: str | None = None,
    yes: bool = False,
    wait: bool = True,
    timeout: timedelta | None = None,
    cross_sign: bool = False,
    compromised: bool = False,
    force: bool = False,
) -> int:
    delay = (
        parse_duration_arg(activate_after, "--activate-after")
        if activate_after is not None
        else None
    )
    domain = _get_domain(ctx, name)
    ca_mod.check_rotatable(domain)
    choice = ca_mod.choose_rotation(domain, delay, cross_sign=cross_sign, compromised=compromised)
    bundles = ca_mod.bundle_views(ctx.port.list_bundles(None), domain.trust_domain)
    active = domain.active
    assert active is not None
    namespaces = max(domain.namespaces, len(bundles))
    ctx.say(
        f"Rotating the CA of TrustDomain {domain.name} ({domain.trust_domain}); active "
        f"authority {active.serial}."
    )
    if choice.mode is RotationMode.compromised:
        ctx.say(
            "COMPROMISED: a new authority is created and signs at once. The old anchor leaves "
            f"every bundle ({namespaces} namespaces) and every certificate the old authority "
            "signed is revoked; certificates are re-issued by the new authority now."
        )
        ctx.say(
            "Clients with stale trust stores WILL FAIL until their volumes update: a pod "
            "whose kubelet has not yet written the new bundle rejects every new certificate "
            f"(CERTIFICATE_VERIFY_FAILED), for up to {human_duration(choice.propagation_delay)} "
            "(the propagation delay) or longer. Use this only when the old key may be known to "
            "someone else; otherwise rotate with --cross-sign."
        )
    else:
        how = (
            "the default, which covers the kubelet propagation delay of "
            f"{human_duration(choice.propagation_delay)} with margin"
            if not choice.explicit
            else "as requested"
        )
        ctx.say(
            f"A new authority is prepared now, published to every entitled bundle "
            f"({namespaces} namespaces), and activated after "
            f"{human_duration(choice.activate_after)} ({how}) once every bundle holds it. "
            "Certificates are then re-issued by the new authority."
        )
        if choice.mode is RotationMode.cross_sign:
            ctx.say(
                "Cross-signed: the old authority certifies the new one, and re-issued "
                "certificates carry that cross-certificate, so clients that still trust only "
                "the old anchor keep verifying them. It is dropped with the old anchor."
            )
    if choice.risk is not None and not force:
        ctx.warn(choice.risk)
        if yes:
            raise UsageError(
                f"--activate-after {human_duration(choice.activate_after)} is shorter than the "
                f"default {human_duration(choice.default)}; pass --force to accept the risk "
                "above, or --cross-sign to rotate quickly without it"
            )
        if not ctx.confirm(
            f"Activate after only {human_duration(choice.activate_after)} anyway? [y/N] "
        ):
            raise AbortedError("aborted: nothing was changed")
    elif choice.risk is not None:
        ctx.warn(choice.risk + " (accepted with --force)")
    if not yes and not ctx.confirm("Rotate now? [y/N] "):
        raise AbortedError("aborted: nothing was changed")
    before = {a.sha256 for a in domain.authorities}
    request = ca_mod.rotation_request_id(ctx.clock(), domain.rotation_request)
    ctx.port.patch_trust_domain(
        domain.name, ca_mod.rotate_patch(request, choice.annotation, choice.mode)
    )
    ctx.say(f"Requested rotation {request}.")
    if not wait:
        ctx.say(f"Not waiting. Follow it with: trustwarden ca status {domain.name}")
        return 0
    limit = timeout or ca_mod.default_rotate_timeout(choice.activate_after)
    return _wait_rotation(ctx, domain, before, limit)


def _wait_rotation(
    ctx: Context, domain: ca_mod.DomainView, before: set[str], timeout: timedelta
) -> int:
    start = ctx.monotonic()
    deadline = start + timeout.total_seconds()
    last: tuple[object, ...] = ()
    announced_prepared = False
    while True:
        current = _get_domain(ctx, domain.name)
        bundles = ca_mod.bundle_views(ctx.port.list_bundles(None), current.trust_domain)
        progress = ca_mod.rotation_progress(current, bundles, before)
        stamp = f"[{int(ctx.monotonic() - start):>4}s]"
        new = progress.new
        if new is not None and not announced_prepared:
            ctx.say(f"{stamp} prepared authority {new.serial} (sha256 {new.sha256[:12]})")
            announced_prepared = True
        if new is not None:
            state = (len(progress.holding), progress.expected, new.state)
            if state != last:
                last = state
                waiting = (
                    f" (waiting: {truncate(', '.join(progress.missing), 60)})"
                    if progress.missing
                    else ""
                )
                ctx.say(
                    f"{stamp} new anchor in {len(progress.holding)}/{progress.expected} "
                    f"bundles{waiting}; authority {new.state}"
                )
            if progress.activated:
                if progress.missing:
                    ctx.warn(
                        "the new authority is Active while these bundles lack its anchor: "
                        + ", ".join(progress.missing)
                    )
                retired = [a.serial for a in current.authorities if a.state == "Retired"]
                ctx.say(
                    f"{stamp} authority {new.serial} is Active"
                    + (
                        f"; {', '.join(retired)} Retired (kept in the bundles until its last "
                        "certificate expires)"
                        if retired
                        else ""
                    )
                )
                ctx.say(
                    f"Rotation of TrustDomain {domain.name} complete at {rfc3339(ctx.clock())}."
                )
                return 0
        if ctx.monotonic() >= deadline:
            if new is None:
                detail = "the operator has not prepared a new authority: is it running?"
            else:
                detail = (
                    f"authority {new.serial} is {new.state}; new anchor in "
                    f"{len(progress.holding)}/{progress.expected} bundles"
                    + (f" (missing: {', '.join(progress.missing)})" if progress.missing else "")
                )
            raise DeadlineError(
                f"timed out after {human_duration(timeout)} waiting for the rotation: {detail}. "
                f"Follow it with: trustwarden ca status {domain.name}"
            )
        ctx.sleep(max(ctx.poll, 1.0))


__all__ = [
    "Context",
    "OpsError",
    "ca_rotate",
    "ca_status",
    "inventory",
    "parse_duration_arg",
    "revoke",
    "select_targets",
    "verify",
]
