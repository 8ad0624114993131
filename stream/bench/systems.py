"""The three systems under test as subprocesses: broker relay, Faust forwarder, insession worker.

Each runs in its own process, as in production, so the load generator and the receiver (this
process) never share an interpreter with what they measure; all of them share the machine's
cores with the broker, which the report states.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from hdrh.histogram import HdrHistogram

__all__ = ["MetricsWatcher", "SystemProcess", "start_process"]


@dataclass
class SystemProcess:
    """One subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_process(
    name: str, argv: list[str], *, log_dir: Path, env: dict[str, str] | None = None
) -> SystemProcess:
    """Start ``python argv...`` with this interpreter, output to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *argv],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
        )
    return SystemProcess(name, process, log_path)


@dataclass
class _Snapshot:
    ts_ms: int
    payload: dict[str, Any]


@dataclass
class MetricsWatcher:
    """Polls the worker's ``{prefix}metrics:worker`` key and keeps every new snapshot."""

    redis_url: str
    key: str
    interval_s: float = 0.2
    snapshots: list[_Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2.0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="metrics-watcher", daemon=True)

    def start(self) -> MetricsWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._client.get(self.key)
            except redis.RedisError:
                raw = None
            if raw:
                payload = orjson.loads(raw)
                with self._lock:
                    if not self.snapshots or self.snapshots[-1].ts_ms != payload["ts_ms"]:
                        self.snapshots.append(_Snapshot(int(payload["ts_ms"]), payload))
            self._stop.wait(self.interval_s)

    def first_after(self, wall_ms: int, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """The first snapshot published at or after ``wall_ms`` (waits for it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                for snapshot in self.snapshots:
                    if snapshot.ts_ms >= wall_ms:
                        return snapshot.payload
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    @staticmethod
    def histogram(payload: dict[str, Any], name: str = "processing_hdr") -> HdrHistogram:
        """A cumulative histogram of a snapshot: ``processing_hdr`` (consumed → outputs acked
        and state checkpointed, per event) or ``page_produced_hdr`` (consumed → page handed to
        the producer, per page) or ``batch_wait_hdr`` (consumed → the batch's processing
        starts, per event)."""
        return HdrHistogram.decode(payload[name].encode("ascii"))
