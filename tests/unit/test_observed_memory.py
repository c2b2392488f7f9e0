"""The pod cache keeps one copy of what 100,000 pods repeat (namespace, labels, account)."""

from __future__ import annotations

import json

from trustwarden.reconcile.observed import PodInfo


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
