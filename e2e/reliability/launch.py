"""`python -m e2e.reliability.launch run ...`: the `trustwarden` CLI, unchanged, except that
EngineConfig.ca_recovery_grace (2 minutes by default, not a CLI flag) comes from
TW_RELIABILITY_CA_RECOVERY_GRACE seconds, so the CA-loss scenario fits in CI's time budget."""

from __future__ import annotations

import functools
import os
import sys
from datetime import timedelta

import trustwarden.handlers.runner as runner
from trustwarden.cli import main
from trustwarden.reconcile.engine import EngineConfig

if __name__ == "__main__":
    grace = float(os.environ.get("TW_RELIABILITY_CA_RECOVERY_GRACE", "120"))
    runner.EngineConfig = functools.partial(  # type: ignore[misc]
        EngineConfig, ca_recovery_grace=timedelta(seconds=grace)
    )
    sys.exit(main(sys.argv[1:]))
