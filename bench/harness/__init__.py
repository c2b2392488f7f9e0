"""Building blocks of the trustwarden benchmark harness (bench/run.py)."""
