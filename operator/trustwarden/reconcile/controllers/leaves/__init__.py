"""Leaves: issue and renew the SVID Secrets of Shared identities and admitted pods."""
