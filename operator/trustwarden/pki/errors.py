"""Typed errors of the PKI core.

Every message says what is wrong, where, and how to fix it, because these strings end up in
``Ready=False`` conditions and Events that a platform engineer reads at 3 a.m.
"""

from __future__ import annotations

__all__ = [
    "CAValidityError",
    "CRLError",
    "ChainError",
    "InvalidArgumentError",
    "InvalidDNSNameError",
    "InvalidDurationError",
    "InvalidPEMError",
    "InvalidSpiffeIDError",
    "IssuanceError",
    "KeyMismatchError",
    "NoAnchorsError",
    "NotACAError",
    "PKIError",
    "StateError",
    "TemplateError",
    "UnsupportedAlgorithmError",
]


class PKIError(Exception):
    """Base class of every error raised by :mod:`trustwarden.pki`."""


class InvalidArgumentError(PKIError, ValueError):
    """A caller passed a value the PKI core cannot work with (a programming error)."""


class InvalidDurationError(PKIError, ValueError):
    """A duration or percentage string could not be parsed."""


class UnsupportedAlgorithmError(PKIError):
    """A key or signature algorithm is not one trustwarden supports."""


class InvalidPEMError(PKIError, ValueError):
    """PEM input is malformed, empty, oversized or holds the wrong kind of object."""


class KeyMismatchError(PKIError):
    """A private key does not belong to the certificate it was paired with."""


class NotACAError(PKIError):
    """A certificate used as a CA lacks CA:true or the keyCertSign key usage."""


class CAValidityError(PKIError):
    """A CA certificate is expired or not yet valid at the given time."""


class ChainError(PKIError):
    """A certificate chain is out of order, broken, or does not end at the given root."""


class InvalidSpiffeIDError(PKIError, ValueError):
    """A SPIFFE ID, trust domain name or path violates the SPIFFE ID specification."""


class TemplateError(PKIError, ValueError):
    """A SPIFFE ID or DNS name template is invalid, or renders to something invalid."""


class InvalidDNSNameError(TemplateError):
    """A DNS name is not a valid RFC 1123 host name."""


class NoAnchorsError(PKIError):
    """No usable trust anchor remains after filtering."""


class IssuanceError(PKIError):
    """A certificate cannot be issued (for example, the issuer expired)."""


class StateError(PKIError, ValueError):
    """Stored rotation state is inconsistent or cannot be decoded."""


class CRLError(PKIError, ValueError):
    """A revocation entry or CRL parameter is invalid."""
