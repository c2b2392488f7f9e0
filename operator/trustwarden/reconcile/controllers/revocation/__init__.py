"""Revocation: revoke by ledger entry, release finalizers, catch up after a restart."""
