"""Errors the CLI prints as one actionable line (a stack trace only with ``--debug``)."""

from __future__ import annotations

from trustwarden.reconcile import ports

CRD_HINT = "install the CRDs: kubectl apply -f deploy/crds/"


class OpsError(Exception):
    """A failure the user can act on; ``str(exc)`` says what happened and what to do."""

    exit_code = 1


class NotFoundError(OpsError, ports.NotFoundError):
    """A named object does not exist (the port's NotFoundError, with a message to act on)."""


class CRDMissingError(OpsError):
    """The trustwarden.io resources are not served: the CRDs are not installed."""


class ForbiddenError(OpsError):
    """RBAC denied a request; the message names the verb and resource needed."""


class ConflictError(OpsError, ports.ConflictError):
    """The object changed between read and write (the port's ConflictError, for the CLI)."""


class UnreachableError(OpsError):
    """The API server cannot be reached, or the kubeconfig is unusable."""


class AbortedError(OpsError):
    """The user declined the confirmation prompt."""


class DeadlineError(OpsError):
    """A wait ran past its deadline."""


class UsageError(OpsError):
    """Invalid command-line input (bad serial, duration, ...)."""

    exit_code = 2
