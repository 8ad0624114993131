"""The worker's start-up warm-up: every compiled kernel is ready before the first batch."""

from __future__ import annotations

import json
import subprocess
import sys

# In a fresh interpreter: kernels called by earlier tests of this process would hide a miss.
_CHECK = """
import json
from processors.compiled import KERNELS
from processors.config import EngineConfig
from stream.warmup import warm_up_engine  # imports the model factory: every kernel module
before = sorted(name for name, kernel in KERNELS.items() if kernel.signatures)
warm_up_engine(EngineConfig())
cold = sorted(name for name, kernel in KERNELS.items() if not kernel.signatures)
print(json.dumps({"kernels": sorted(KERNELS), "before": before, "cold": cold}))
"""


def test_warm_up_compiles_every_kernel() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kernels"], "no compiled kernels: the engine's hot paths lost them"
    assert report["before"] == [], "kernels compiled at import: the check would prove nothing"
    assert report["cold"] == [], f"left to the first batch: {report['cold']}"
