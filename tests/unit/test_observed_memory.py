"""The caches keep one copy of what 100,000 pods and their Secrets repeat (namespace, labels,
account, identity, issuer), and no per-object field they can compute when asked."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from typing import Any

from cryptography.hazmat.primitives import hashes

from tests.unit.fakes import (
    FakeClock,
    FakeKube,
    add_web_pod,
    drain,
    issued_pods,
    make_engine,
    per_pod_world,
)
from trustwarden.reconcile.observed import PodInfo, SecretInfo


def parsed(name: str) -> PodInfo:
    text = json.dumps(
        {
            "metadata": {
                "name": name,
                "namespace": "shop",
                "uid": f"uid-{name}",
                "resourceVersion": "7",
                "labels": {"app": "web", "trustwarden.io/identity": "web"},
            },
            "spec": {"serviceAccountName": "web"},
        }
    )
    return PodInfo.from_body(json.loads(text))  # a fresh parse: fresh strings


def test_repeated_strings_are_shared_between_pods() -> None:
    a, b = parsed("a"), parsed("b")
    assert a.namespace is b.namespace
    assert a.service_account is b.service_account
    key_a, value_a = next(iter(a.labels.items()))
    key_b, value_b = next(iter(b.labels.items()))
    assert key_a is key_b and value_a is value_b
    assert a.identity == "web" and a.identity is b.identity
    assert a.name == "a" and a.uid == "uid-a"


def test_pods_with_the_same_labels_share_one_mapping() -> None:
    a, b = parsed("a"), parsed("b")
    assert a.labels is b.labels and dict(a.labels) == {
        "app": "web",
        "trustwarden.io/identity": "web",
    }
    other = json.loads(json.dumps({"metadata": {"name": "c", "labels": {"app": "api"}}}))
    assert PodInfo.from_body(other).labels == {"app": "api"}
    assert a.uid is parsed("a").uid  # interned: Secrets' owner references point at it


def _issued_secrets() -> list[dict[str, Any]]:
    kube, clock = FakeKube(), FakeClock()
    asyncio.run(issued_pods(kube, clock, 2))
    return [
        json.loads(json.dumps(body))  # fresh strings, as a listing delivers them
        for (kind, ns, _), body in sorted(kube.objects.items())
        if kind == "Secret" and ns == "shop"
    ]


def test_secrets_of_one_identity_share_what_their_leaves_repeat() -> None:
    first, second = (SecretInfo.from_body(body) for body in _issued_secrets())
    assert first.facts is not None and second.facts is not None
    assert first.facts.serial != second.facts.serial
    assert first.namespace is second.namespace and first.identity is second.identity
    assert first.finalizers is second.finalizers
    assert first.facts.uris is second.facts.uris
    assert first.facts.spiffe_id is second.facts.spiffe_id
    assert first.facts.authority_key_id is second.facts.authority_key_id
    assert len(first.data_digest) == 16


def test_the_recorded_fingerprint_is_kept_only_when_it_is_not_the_leafs() -> None:
    body = _issued_secrets()[0]
    info = SecretInfo.from_body(body)
    assert info.facts is not None and info.recorded_sha256 is None  # it matches: nothing kept
    edited = copy.deepcopy(body)
    edited["metadata"]["annotations"]["trustwarden.io/sha256"] = "ab" * 32
    kept = SecretInfo.from_body(edited)
    assert kept.recorded_sha256 == "ab" * 32  # a renewal then sees the leaf is not ours
    assert kept.meta_digest != info.meta_digest  # and the annotation is restored
    changed = copy.deepcopy(body)
    changed["data"]["ca.crt"] = changed["data"]["tls.crt"]
    assert SecretInfo.from_body(changed).data_digest != info.data_digest


def test_leaves_the_operator_just_issued_share_their_identity_too() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        per_pod_world(engine)
        for i in range(2):
            add_web_pod(engine, kube, f"w{i}", f"uid-pod-w{i}")
            engine.scheduler.schedule(("pod", "shop", f"w{i}"), clock())
        engine.scheduler.schedule(("td", "prod"), clock())
        await drain(engine, clock)
        facts = [s.facts for s in engine.secrets.values() if s.facts is not None]
        assert len(facts) == 2  # kept from the write, not parsed back
        assert facts[0].spiffe_id is facts[1].spiffe_id and facts[0].uris is facts[1].uris

    asyncio.run(scenario())


def test_a_leaf_is_kept_deflated_against_a_sibling_and_read_back_whole() -> None:
    first, second = (SecretInfo.from_body(body) for body in _issued_secrets())
    for info in (first, second):
        assert info.facts is not None
        assert info.facts.certificate.serial_number == info.facts.serial  # the DER, whole
        assert info.facts.sha256 == info.facts.certificate.fingerprint(hashes.SHA256()).hex()
    packed = [i.facts for i in (first, second) if i.facts is not None and i.facts.der_template]
    assert packed, "no leaf was packed against its sibling"
    for facts in packed:
        assert len(facts.packed_der) < len(facts.der) * 0.6


def test_facts_compare_by_their_der_however_it_is_packed() -> None:
    info = SecretInfo.from_body(_issued_secrets()[1])
    assert info.facts is not None
    plain = dataclasses.replace(info.facts, packed_der=info.facts.der, der_template=b"")
    assert plain == info.facts and plain.der == info.facts.der
    other = SecretInfo.from_body(_issued_secrets()[0]).facts
    assert other is not None and other != info.facts
