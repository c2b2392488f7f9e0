"""Proof that the local control plane is a real one: GC, namespace lifecycle, RBAC, TokenRequest."""

from __future__ import annotations

import json

from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.support import Cluster, gone, pinned_versions, wait_for


def test_version_is_the_pinned_release(cluster: Cluster) -> None:
    info = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    pinned = pinned_versions()["KUBE_VERSION"]
    assert info["serverVersion"]["gitVersion"] == pinned
    assert info["clientVersion"]["gitVersion"] == pinned
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_garbage_collector_deletes_owned_objects(cluster: Cluster, namespace: str) -> None:
    core = cluster.core
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="dependent",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            ),
            string_data={"k": "v"},
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        lambda: gone(lambda: core.read_namespaced_secret("dependent", namespace)),
        timeout=60,
        what="the garbage collector to delete the Secret owned by the deleted ConfigMap",
    )


def test_namespace_deletion_completes(cluster: Cluster) -> None:
    core = cluster.core
    with cluster.namespace(prefix="tw-e2e-nsdel") as name:
        core.create_namespaced_config_map(
            name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"))
        )
        wait_for(
            lambda: not gone(lambda: core.read_namespaced_service_account("default", name)),
            timeout=60,
            what=f"the ServiceAccount controller to create {name}/default",
        )
        core.delete_namespace(name)
        wait_for(
            lambda: gone(lambda: core.read_namespace(name)),
            timeout=90,
            what=f"namespace {name} to finish deleting",
        )


def test_service_account_token_obeys_rbac(cluster: Cluster, namespace: str) -> None:
    core = cluster.core
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    as_reader = client.Configuration()
    as_reader.host = cluster.api.configuration.host
    as_reader.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    as_reader.api_key = {"authorization": f"Bearer {token}"}
    reader_core = client.CoreV1Api(client.ApiClient(as_reader))

    try:
        reader_core.list_namespaced_secret(namespace)
        raise AssertionError("listing Secrets without a RoleBinding must be forbidden")
    except ApiException as exc:
        assert exc.status == 403, exc

    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )

    def can_list() -> bool:
        try:
            reader_core.list_namespaced_secret(namespace)
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise
        return True

    wait_for(can_list, timeout=30, what="the RoleBinding to grant list on Secrets")
