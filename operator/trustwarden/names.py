"""The wire contract: every API group, label, annotation, finalizer and object name that
trustwarden writes or reads. `reconcile`, `ops`, `handlers`, `k8s` and `pki` all take them from
here; users and tests depend on these strings (design.md), so change them only with a migration.
This module imports nothing from trustwarden."""

from __future__ import annotations

# --- API -----------------------------------------------------------------------------------
GROUP = "trustwarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --- labels --------------------------------------------------------------------------------
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "trustwarden"
PREFIX = "trustwarden.io/"
IDENTITY_LABEL = "trustwarden.io/identity"
INJECT_LABEL = "trustwarden.io/inject"
ROLE_LABEL = "trustwarden.io/role"  # on our state objects in the operator namespace

# --- annotations ---------------------------------------------------------------------------
SECRET_ANNOTATION = "trustwarden.io/secret"
# Written by the injection webhook beside SECRET_ANNOTATION: an HMAC that binds namespace,
# identity and Secret name (reconcile/admission.py).
ADMISSION_ANNOTATION = "trustwarden.io/admission"
CONTENT_HASH_ANNOTATION = "trustwarden.io/content-hash"
REVOKE_ANNOTATION = "trustwarden.io/revoke"
RENEW_AT_ANNOTATION = "trustwarden.io/renew-at"
ROTATE_ANNOTATION = "trustwarden.io/rotate"
ACTIVATE_AFTER_ANNOTATION = "trustwarden.io/activate-after"
ROTATION_MODE_ANNOTATION = "trustwarden.io/rotation-mode"  # cross-signed or compromised
SERIAL_ANNOTATION = "trustwarden.io/serial"
ISSUER_ANNOTATION = "trustwarden.io/issuer"
OWNER_ANNOTATION = "trustwarden.io/owner"
TRUST_DOMAIN_ANNOTATION = "trustwarden.io/trust-domain"
SPIFFE_ID_ANNOTATION = "trustwarden.io/spiffe-id"
LEDGER_SHARDS_ANNOTATION = "trustwarden.io/ledger-shards"  # on a ledger shard: the shard count
DESCRIPTION_ANNOTATION = "trustwarden.io/description"

# --- finalizers ----------------------------------------------------------------------------
# On every issued Secret: the garbage collector (or anyone) can start deleting it at any time,
# even while the operator is down, but it is only removed once its serial is in the persisted
# revocation list (or, if its owner still lives, once the operator has seen the deletion).
# The same string as REVOKE_ANNOTATION by design (design.md): one name for "revocation".
REVOKE_FINALIZER = REVOKE_ANNOTATION

# --- objects -------------------------------------------------------------------------------
OPERATOR_NAMESPACE = "trustwarden-system"  # the default; --namespace changes it
SVID_VOLUME = "trustwarden-svid"
BUNDLE_CONFIGMAP = "trustwarden-bundle"
CA_SECRET_PREFIX = "trustwarden-ca-"
REVOCATIONS_PREFIX = "trustwarden-revocations-"
LEDGER_PREFIX = "trustwarden-ledger-"
ADMISSION_KEY_SECRET = "trustwarden-admission-key"
EVENT_REPORTER = "trustwarden.io/operator"

# --- selectors -----------------------------------------------------------------------------
SECRET_SELECTOR = f"{MANAGED_BY}={MANAGER},{IDENTITY_LABEL}"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
