"""The invariant every fault scenario must end in, checked from the outside (admin identity,
nothing borrowed from the operator's code):

1. every live selected pod has exactly one Secret, holding a valid, unexpired SVID for the
   current spec of its WorkloadIdentity (SPIFFE ID and DNS names rendered from the templates,
   key algorithm, lifetime within the TTL), whose chain verifies;
2. no Secret exists for a deleted pod (or a deleted WorkloadIdentity);
3. every serial ever seen for a deleted pod or identity is in its domain's CRL (the bundle's
   `<trustDomain>.crl.pem`, signature checked) and in the operator namespace's
   `trustwarden-revocations-<TrustDomain>` ConfigMap, until it expires;
4. no two live Secrets share a key or a serial;
5. every namespace bundle verifies every live leaf in that namespace (and its CRL does not
   list it); a sample is cross-checked with `openssl verify -crl_check`.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.reliability.harness import MANAGED, SecretRecorder
from e2e.support import GROUP, VERSION, Cluster, openssl_verify

BACKDATE = timedelta(minutes=5)
SKEW = timedelta(seconds=5)
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


class InvariantViolation(AssertionError):
    pass


@dataclass
class Report:
    namespaces: int = 0
    pods: int = 0
    secrets: int = 0
    deleted_owners: int = 0
    revoked_serials_checked: int = 0
    openssl_checked: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "namespaces": self.namespaces,
            "live_pods": self.pods,
            "live_secrets": self.secrets,
            "deleted_owners": self.deleted_owners,
            "revoked_serials_checked": self.revoked_serials_checked,
        }


def parse_duration(text: str) -> timedelta:
    total = 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    for number, unit in re.findall(r"([0-9.]+)(ns|us|ms|h|m|s)", text):
        total += float(number) * units[unit]
    return timedelta(seconds=total)


def render(template: str, variables: dict[str, str], labels: dict[str, str] | None) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("label:"):
            assert labels is not None, f"{{{name}}} without a pod"
            return labels[name.removeprefix("label:")]
        return variables[name]

    return re.sub(r"\{([^{}]+)\}", one, template)


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_algorithm(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSAP256", "secp384r1": "ECDSAP384"}.get(key.curve.name, "?")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA{key.key_size}"
    return "?"


def load_crls(pem: str | None) -> list[x509.CertificateRevocationList]:
    if not pem:
        return []
    return [x509.load_pem_x509_crl(block) for block in _PEM_CRL.findall(pem.encode())]


def verify_chain(
    chain: list[x509.Certificate], anchors: list[x509.Certificate], now: datetime
) -> str | None:
    """None when chain[0] chains to one of `anchors` through chain[1:]; else why not."""
    current = chain[0]
    pool = list(chain[1:])
    for _ in range(len(chain) + 1):
        for anchor in anchors:
            if anchor.subject == current.issuer:
                try:
                    current.verify_directly_issued_by(anchor)
                except Exception:
                    continue
                if not anchor.not_valid_before_utc <= now < anchor.not_valid_after_utc:
                    return f"anchor {anchor.subject.rfc4514_string()} is outside its validity"
                return None
        parents = [c for c in pool if c.subject == current.issuer]
        if not parents:
            return f"no anchor in the bundle issued {current.issuer.rfc4514_string()}"
        current = parents[0]
        pool.remove(current)
    return "chain too long"


class Invariants:
    def __init__(
        self, cluster: Cluster, operator_namespace: str, recorder: SecretRecorder, tmp: Path
    ) -> None:
        self.cluster = cluster
        self.core = client.CoreV1Api(cluster.api)
        self.custom = client.CustomObjectsApi(cluster.api)
        self.opns = operator_namespace
        self.recorder = recorder
        self.tmp = tmp
        self.namespaces: set[str] = set()
        # owner uid -> (namespace, kind/name, serials recorded at deletion time)
        self.deleted: dict[str, tuple[str, str, dict[int, str]]] = {}
        self.deleted_at: dict[str, float] = {}  # owner uid -> wall-clock time of deletion
        # serial -> why it is excused from the revocation check (a documented, measured loss)
        self.waived: dict[int, str] = {}
        self.deleted_identities: set[tuple[str, str]] = set()

    # --- what the scenarios tell us ---

    def track(self, namespace: str) -> None:
        self.namespaces.add(namespace)

    def untrack(self, namespace: str) -> None:
        self.namespaces.discard(namespace)

    def before_delete(
        self, namespace: str, what: str, uid: str, *, identity: str | None = None
    ) -> None:
        """Call before deleting a pod or WorkloadIdentity: remembers the serials it holds now
        (for an identity, also its pods' Secrets), besides all the recorder has seen for it."""
        serials: dict[int, str] = {}
        for secret in self.core.list_namespaced_secret(namespace, label_selector=MANAGED).items:
            labels = secret.metadata.labels or {}
            if uid in [o.uid for o in secret.metadata.owner_references or ()] or (
                identity is not None and labels.get("trustwarden.io/identity") == identity
            ):
                leaf = _leaf(secret)
                if leaf is not None:
                    domain = (secret.metadata.annotations or {}).get("trustwarden.io/trust-domain")
                    serials[int(leaf.serial_number)] = str(domain)
        self.deleted[uid] = (namespace, what, serials)
        self.deleted_at[uid] = time.time()
        if identity is not None:
            self.deleted_identities.add((namespace, identity))

    def unrevoked(self, problems: list[str]) -> set[int]:
        """The serials named by revocation problems of a check."""
        found = set()
        for problem in problems:
            match = re.search(r"serial ([0-9a-f]+) not in", problem)
            if match:
                found.add(int(match.group(1), 16))
        return found

    # --- the check ---

    def check(self, *, openssl_sample: int = 2, strict: bool = True) -> Report:
        report = Report()
        now = datetime.now(UTC)
        problems = report.problems
        domains = {
            td["metadata"]["name"]: td
            for td in self.custom.list_cluster_custom_object(GROUP, VERSION, "trustdomains")[
                "items"
            ]
        }
        name_of = {td["spec"]["trustDomain"]: name for name, td in domains.items()}
        revocations: dict[str, set[int]] = {}
        for name in domains:
            try:
                cm = self.core.read_namespaced_config_map(
                    f"trustwarden-revocations-{name}", self.opns
                )
                raw = json.loads((cm.data or {}).get("revoked.json") or "[]")
                revocations[name] = {int(r["serial"], 16) for r in raw}
            except ApiException as exc:
                if exc.status != 404:
                    raise
                revocations[name] = set()

        live_owner_uids: set[str] = set()
        serial_owner: dict[int, str] = {}
        key_owner: dict[bytes, str] = {}
        bundles: dict[str, dict[str, str]] = {}
        for namespace in sorted(self.namespaces):
            try:
                ns = self.core.read_namespace(namespace)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if ns.metadata.deletion_timestamp:
                continue
            report.namespaces += 1
            injecting = (ns.metadata.labels or {}).get("trustwarden.io/inject") == "enabled"
            sampled_here = 0
            wids = {
                w["metadata"]["name"]: w
                for w in self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "workloadidentities"
                )["items"]
            }
            pods = self.core.list_namespaced_pod(namespace).items
            secrets = {
                s.metadata.name: s
                for s in self.core.list_namespaced_secret(namespace, label_selector=MANAGED).items
            }
            try:
                bundle = dict(
                    self.core.read_namespaced_config_map("trustwarden-bundle", namespace).data or {}
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                bundle = {}
            bundles[namespace] = bundle
            anchors = (
                x509.load_pem_x509_certificates(bundle["ca.crt"].encode())
                if bundle.get("ca.crt")
                else []
            )
            owners_of: dict[str, list[str]] = defaultdict(list)
            for secret in secrets.values():
                for ref in secret.metadata.owner_references or ():
                    owners_of[ref.uid].append(secret.metadata.name)

            expected: list[tuple[str, str, dict[str, Any], dict[str, str], str, str]] = []
            # (secret name, owner uid, wid, variables, labels-json, what)
            for pod in pods:
                meta = pod.metadata
                if meta.deletion_timestamp:
                    continue
                labels = dict(meta.labels or {})
                identity = labels.get("trustwarden.io/identity")
                if not identity:
                    if injecting:
                        problems.extend(_uninjected(namespace, pod, wids))
                    continue
                wid = wids.get(identity)
                if wid is None or wid["spec"].get("delivery", {}).get("mode", "PerPod") != "PerPod":
                    continue
                if not selects(wid["spec"].get("podSelector"), labels):
                    continue
                report.pods += 1
                live_owner_uids.add(meta.uid)
                secret_name = (meta.annotations or {}).get("trustwarden.io/secret", "")
                owned = owners_of.get(meta.uid, [])
                if owned != [secret_name]:
                    problems.append(
                        f"pod {namespace}/{meta.name} must have exactly one Secret "
                        f"({secret_name!r}), has {owned}"
                    )
                    continue
                variables = {
                    "namespace": namespace,
                    "name": identity,
                    "serviceAccount": pod.spec.service_account_name or "default",
                    "pod.name": meta.name,
                    "pod.uid": meta.uid,
                }
                expected.append(
                    (secret_name, meta.uid, wid, variables, json.dumps(labels), f"pod {meta.name}")
                )
            for wid_name, wid in wids.items():
                spec = wid["spec"]
                if wid["metadata"].get("deletionTimestamp"):
                    continue
                live_owner_uids.add(wid["metadata"]["uid"])
                if spec.get("delivery", {}).get("mode") != "Shared":
                    continue
                secret_name = spec["delivery"]["secretName"]
                variables = {
                    "namespace": namespace,
                    "name": wid_name,
                    "serviceAccount": spec.get("serviceAccountName") or "default",
                }
                if secret_name not in secrets:
                    problems.append(f"Shared identity {namespace}/{wid_name} has no Secret")
                    continue
                expected.append(
                    (secret_name, wid["metadata"]["uid"], wid, variables, "null", f"wid {wid_name}")
                )

            for secret_name, owner_uid, wid, variables, labels_json, what in expected:
                secret = secrets[secret_name]
                report.secrets += 1
                where = f"{namespace}/{secret_name} ({what})"
                if owner_uid not in [o.uid for o in secret.metadata.owner_references or ()]:
                    problems.append(f"{where}: not owned by {owner_uid}")
                    continue
                data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
                if (
                    set(data) != {"tls.crt", "tls.key", "ca.crt"}
                    or secret.type != "kubernetes.io/tls"
                ):
                    problems.append(f"{where}: unexpected layout {secret.type} {sorted(data)}")
                    continue
                try:
                    chain = x509.load_pem_x509_certificates(data["tls.crt"])
                    key = serialization.load_pem_private_key(data["tls.key"], None)
                except ValueError as exc:
                    problems.append(f"{where}: unreadable: {exc}")
                    continue
                leaf = chain[0]
                if (
                    data["tls.key"].count(b"PRIVATE KEY-----") != 2
                    or b"PRIVATE" in data["tls.crt"] + data["ca.crt"]
                ):
                    problems.append(f"{where}: carries more than its own key")
                if spki(leaf) != key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ):
                    problems.append(f"{where}: tls.key does not match the certificate")
                spec = wid["spec"]
                td = domains.get(spec["trustDomain"])
                if td is None:
                    problems.append(f"{where}: TrustDomain {spec['trustDomain']} is gone")
                    continue
                trust_domain = td["spec"]["trustDomain"]
                variables = {**variables, "trustDomain": trust_domain}
                labels = json.loads(labels_json)
                want_id = (
                    "spiffe://"
                    + trust_domain
                    + render(
                        spec.get("spiffeID", "/ns/{namespace}/sa/{serviceAccount}"),
                        variables,
                        labels,
                    )
                )
                want_dns = [render(t, variables, labels) for t in spec.get("dnsNames") or ()]
                try:
                    sans = leaf.extensions.get_extension_for_class(
                        x509.SubjectAlternativeName
                    ).value
                    got_id = sans.get_values_for_type(x509.UniformResourceIdentifier)
                    got_dns = sans.get_values_for_type(x509.DNSName)
                except x509.ExtensionNotFound:
                    got_id, got_dns = [], []
                if got_id != [want_id]:
                    problems.append(f"{where}: SPIFFE ID {got_id} != {want_id}")
                if sorted(got_dns) != sorted(want_dns):
                    problems.append(f"{where}: DNS names {got_dns} != {want_dns}")
                if key_algorithm(leaf) != spec.get("keyAlgorithm", "ECDSAP256"):
                    problems.append(
                        f"{where}: key {key_algorithm(leaf)} != {spec.get('keyAlgorithm')}"
                    )
                if not (leaf.not_valid_before_utc <= now + SKEW and now < leaf.not_valid_after_utc):
                    problems.append(
                        f"{where}: not valid now ({leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc})"
                    )
                lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
                if lifetime > parse_duration(spec.get("ttl", "1h")) + BACKDATE + SKEW:
                    problems.append(
                        f"{where}: lifetime {lifetime} above spec.ttl {spec.get('ttl')}"
                    )
                serial = int(leaf.serial_number)
                if serial in serial_owner:
                    problems.append(f"{where}: serial {serial:x} also in {serial_owner[serial]}")
                serial_owner[serial] = where
                key_id = spki(leaf)
                if key_id in key_owner:
                    problems.append(f"{where}: key also in {key_owner[key_id]}")
                key_owner[key_id] = where
                # 5. the namespace bundle verifies it, and its CRL does not revoke it
                why = verify_chain(chain, anchors, now)
                if why is not None:
                    problems.append(f"{where}: does not verify against the namespace bundle: {why}")
                crls = load_crls(bundle.get(f"{trust_domain}.crl.pem"))
                if not crls:
                    problems.append(f"{where}: bundle has no CRL for {trust_domain}")
                elif any(c.get_revoked_certificate_by_serial_number(serial) for c in crls):
                    problems.append(f"{where}: live serial {serial:x} is revoked")
                if serial in revocations.get(name_of.get(trust_domain, ""), set()):
                    problems.append(
                        f"{where}: live serial {serial:x} is in the revocations ConfigMap"
                    )
                if sampled_here < openssl_sample:
                    sampled_here += 1
                    result = openssl_verify(
                        self.tmp / f"ossl-{namespace}-{sampled_here}",
                        data["tls.crt"],
                        bundle.get("ca.crt", ""),
                        "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in crls),
                    )
                    report.openssl_checked += 1
                    if result.returncode != 0:
                        problems.append(f"{where}: openssl: {result.stdout}{result.stderr}")

            # 2. no Secret for an owner that is gone
            for secret in secrets.values():
                refs = secret.metadata.owner_references or ()
                if any(ref.uid in live_owner_uids for ref in refs):
                    continue
                if not any(self._owner_alive(namespace, ref) for ref in refs):
                    problems.append(
                        f"Secret {namespace}/{secret.metadata.name} has no live owner "
                        f"({[(r.kind, r.name) for r in refs]})"
                    )

        # 3. the deleted owners' serials are revoked, and their Secrets are gone
        all_managed = self.core.list_secret_for_all_namespaces(label_selector=MANAGED).items
        owners_anywhere = {
            ref.uid: s.metadata.name
            for s in all_managed
            for ref in s.metadata.owner_references or ()
        }
        for s in all_managed:
            labels = s.metadata.labels or {}
            key = (s.metadata.namespace, labels.get("trustwarden.io/identity", ""))
            if key in self.deleted_identities:
                problems.append(
                    f"Secret {key[0]}/{s.metadata.name} of deleted identity {key[1]} remains"
                )
        for uid, (namespace, what, at_delete) in self.deleted.items():
            report.deleted_owners += 1
            if uid in owners_anywhere:
                problems.append(
                    f"{what} in {namespace} was deleted but Secret {owners_anywhere[uid]} remains"
                )
            serials = {
                s: seen.trust_domain
                for s, seen in self.recorder.serials_of(uid).items()
                if seen.not_after > now.timestamp()
            }
            serials.update(at_delete)
            for serial, trust_domain in serials.items():
                if serial in self.waived:
                    continue
                report.revoked_serials_checked += 1
                name = name_of.get(str(trust_domain))
                if name is None:
                    continue  # its TrustDomain is gone: nothing to revoke against
                if serial not in revocations.get(name, set()):
                    problems.append(
                        f"{what} in {namespace}: serial {serial:x} not in "
                        f"{self.opns}/trustwarden-revocations-{name}"
                    )
                bundle = bundles.get(namespace) or {}
                if f"{trust_domain}.pem" in bundle:
                    crls = load_crls(bundle.get(f"{trust_domain}.crl.pem"))
                    if not any(c.get_revoked_certificate_by_serial_number(serial) for c in crls):
                        problems.append(
                            f"{what} in {namespace}: serial {serial:x} not in the bundle CRL"
                        )
        # every CRL is signed by an anchor of its own domain
        for namespace, bundle in bundles.items():
            for key, value in bundle.items():
                if not key.endswith(".crl.pem"):
                    continue
                domain_anchors = (
                    x509.load_pem_x509_certificates(
                        bundle.get(key.removesuffix(".crl.pem") + ".pem", "").encode() or b"x"
                    )
                    if bundle.get(key.removesuffix(".crl.pem") + ".pem")
                    else []
                )
                for crl in load_crls(value):
                    if not any(
                        a.subject == crl.issuer and crl.is_signature_valid(a.public_key())  # type: ignore[arg-type]
                        for a in domain_anchors
                    ):
                        problems.append(f"{namespace}: {key} is not signed by a {key} anchor")
                    if crl.next_update_utc is not None and crl.next_update_utc <= now:
                        problems.append(f"{namespace}: {key} is stale (nextUpdate passed)")
        if problems and strict:
            shown = "\n  ".join(problems[:25])
            raise InvariantViolation(f"{len(problems)} invariant violation(s):\n  {shown}")
        return report

    def _owner_alive(self, namespace: str, ref: Any) -> bool:
        """A pod or identity created after our listing, or one that is not selected."""
        if ref.uid in self.deleted:
            return False
        try:
            if ref.kind == "Pod":
                obj = self.core.read_namespaced_pod(ref.name, namespace)
                uid, deleting = obj.metadata.uid, obj.metadata.deletion_timestamp
            else:
                wid = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "workloadidentities", ref.name
                )
                uid, deleting = wid["metadata"]["uid"], wid["metadata"].get("deletionTimestamp")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(uid == ref.uid and not deleting)

    def settle_revocations(
        self, *, timeout: float, what: str, stable_for: float = 15.0
    ) -> set[int]:
        """Wait until the only violations left are serials missing from the CRL and that set has
        not changed for `stable_for` seconds (the operator revokes what it can at start-up and
        on each deletion; what is still missing after that is lost). Returns those serials."""
        deadline = time.monotonic() + timeout
        last: set[int] | None = None
        since = time.monotonic()
        while True:
            try:
                report = self.check(strict=False)
                if not report.problems:
                    return set()
                missing = self.unrevoked(report.problems)
                only_revocations = all(
                    re.search(r"serial [0-9a-f]+ not in", p) for p in report.problems
                )
                if not only_revocations:
                    last, since = None, time.monotonic()
                elif missing != last:
                    last, since = missing, time.monotonic()
                elif time.monotonic() - since >= stable_for:
                    return missing
            except (ApiException, OSError, urllib3.exceptions.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise InvariantViolation(
                    f"{what}: did not settle within {timeout:.0f}s; last: "
                    + "; ".join(self.check(strict=False).problems[:10])
                )
            time.sleep(1.0)

    def converge(self, *, timeout: float, what: str) -> tuple[float, Report]:
        """Poll the check until it holds; returns (seconds to converge, report)."""
        started = time.monotonic()
        deadline = started + timeout
        last: Exception | None = None
        while True:
            try:
                report = self.check()
                return time.monotonic() - started, report
            except (InvariantViolation, ApiException, OSError, urllib3.exceptions.HTTPError) as exc:
                last = exc
            if time.monotonic() > deadline:
                message = f"{what}: the invariant did not hold within {timeout:.0f}s; last:\n{last}"
                (self.tmp.parent / "last-violation.txt").write_text(message)
                raise InvariantViolation(message)
            time.sleep(1.0)


def _uninjected(namespace: str, pod: Any, wids: dict[str, dict[str, Any]]) -> list[str]:
    """A pod of an opted-in namespace, selected by a PerPod identity that existed (for 2 s,
    so the webhook's cache had it) when the pod was created, but admitted without injection."""
    labels = dict(pod.metadata.labels or {})
    created = pod.metadata.creation_timestamp
    found = []
    for name, wid in wids.items():
        spec = wid["spec"]
        if spec.get("delivery", {}).get("mode", "PerPod") != "PerPod":
            continue
        if not selects(spec.get("podSelector"), labels):
            continue
        wid_created = datetime.fromisoformat(
            wid["metadata"]["creationTimestamp"].replace("Z", "+00:00")
        )
        if created is not None and created >= wid_created + timedelta(seconds=2):
            found.append(
                f"pod {namespace}/{pod.metadata.name} is selected by {name} but was admitted "
                "without the SVID injection (it will never get an identity)"
            )
    return found


def _leaf(secret: Any) -> x509.Certificate | None:
    raw = (secret.data or {}).get("tls.crt")
    if not raw:
        return None
    try:
        return x509.load_pem_x509_certificates(base64.b64decode(raw))[0]
    except ValueError:
        return None
