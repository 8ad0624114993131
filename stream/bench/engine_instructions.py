"""Instructions per event of the engine, counted by valgrind's callgrind: the firm A/B figure.

``python -m stream.bench.engine_instructions [warmup_events] [events]`` replays the
engine-alone traffic (``stream.bench.engine_alone``, the worker's batches of 50) under
callgrind and prints one JSON object with the instructions per measured event. On this shared
2-core host even the CPU time of the same code swings ±15-25% between runs, while the
instruction count of the same tree repeats within ~0.1%, so a speed-up is judged by it and
its wall-time effect by alternating ``engine_alone`` runs.

Only the engine is counted: valgrind starts with instrumentation off (the imports, the kernels'
compilation and the warm-up run at near-native speed), turns it on with ``callgrind_control``
once the warm-up is done, and collects only inside ``functools.reduce``, the C function each
measured batch is called through; the traffic generator's reactions to the pages are left out.
Needs ``valgrind`` on the PATH (Debian: ``apt-get install valgrind``); ``PYTHONHASHSEED=0``
keeps set and dict orders, hence the count, the same from run to run.
"""

from __future__ import annotations

import functools
import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["count_instructions", "replay", "total_instructions"]

#: The C function the measured batches run inside (``--toggle-collect``).
_COLLECT_INSIDE = "functools_reduce"
_BATCH_EVENTS = 50


def replay(warmup_events: int, events: int, on_measuring: Callable[[], None]) -> int:
    """Run the engine-alone closed loop; batches after the warm-up go through ``reduce``.

    ``on_measuring`` is called once, when the warm-up is over. Returns the events measured.
    """
    from processors.config import EngineConfig
    from stream.bench.engine_alone import _collector, _process_batch, _World

    world = _World(users=2_000, seed=1, config=EngineConfig())
    seen = measured = 0
    with _collector(True):  # garbage collected as the worker does (see engine_alone)
        gc.collect()
        while seen < warmup_events + events:
            batch = world.next_batch(_BATCH_EVENTS)
            if seen >= warmup_events:
                if not measured:
                    on_measuring()
                served = functools.reduce(lambda _, b: _process_batch(world, b), [batch], None)
                measured += len(batch)
            else:
                served = _process_batch(world, batch)
            for page in served:
                world.pages[page.user_id] = page
            seen += len(batch)
    return measured


def total_instructions(callgrind_out: str) -> int:
    """The ``totals:`` (or ``summary:``) line of a callgrind output file: its Ir count."""
    for line in callgrind_out.splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError("no totals or summary line in the callgrind output")


def count_instructions(warmup_events: int = 20_000, events: int = 5_000) -> dict[str, Any]:
    """Replay under callgrind in a child process; the instructions it counted per event."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--toggle-collect={_COLLECT_INSIDE}",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "stream.bench.engine_instructions",
            "--child",
            str(warmup_events),
            str(events),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        child = subprocess.run(command, env=env, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"the replay under callgrind failed:\n{child.stderr[-2000:]}")
        measured = int(child.stdout.split("measured=")[1].split()[0])
        with open(out, encoding="utf-8") as file:
            instructions = total_instructions(file.read())
    return {
        "warmup_events": warmup_events,
        "events": measured,
        "batch_events": _BATCH_EVENTS,
        "instructions": instructions,
        "instructions_per_event": round(instructions / measured),
    }


def _instrument_from_now() -> None:
    subprocess.run(
        ["callgrind_control", "--instr=on", str(os.getpid())], check=True, capture_output=True
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(f"measured={replay(int(sys.argv[2]), int(sys.argv[3]), _instrument_from_now)}")
    else:
        counts = [int(arg) for arg in sys.argv[1:3]]
        print(orjson.dumps(count_instructions(*counts), option=orjson.OPT_INDENT_2).decode())
