"""The layering rules hold: stream -> online_models -> processors -> schemas, pure core.

Runs import-linter's contracts from pyproject.toml, so CI (which runs the tests) enforces them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_pure_packages_do_not_read_clocks() -> None:
    """The engine takes time as an argument; a clock call in the core would break replays."""
    offenders = []
    for package in ("schemas", "processors", "online_models"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("time.time(", "datetime.now(", "time.monotonic(", "time_ns("):
                if needle in text:
                    offenders.append(f"{path.relative_to(REPO_ROOT)}: {needle}")
    assert offenders == []
