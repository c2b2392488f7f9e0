"""The controllers of the reconcile engine: each owns one capability over the shared ClusterStore."""
