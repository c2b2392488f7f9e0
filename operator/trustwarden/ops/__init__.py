"""trustwarden.ops: the pure logic behind the operations CLI (`trustwarden inventory | verify |
revoke | ca status | ca rotate`).

Row building, states, formatting, verification checks, revocation target selection and
rotation progress work on plain JSON bodies (as the API returns them) and an explicit ``now``,
so they are tested without a cluster. The command flows in :mod:`trustwarden.ops.commands`
talk to the cluster only through the small :class:`trustwarden.ops.port.OpsPort` protocol,
implemented over the ``kubernetes`` client by :mod:`trustwarden.k8s.ops_client`. Nothing here
imports ``kubernetes`` or ``kopf``.
"""
