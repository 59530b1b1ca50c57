"""A local single-node Apache Kafka 4.x (KRaft) broker for development and tests.

`LocalBroker` resolves the official Kafka jars from Maven Central once (through the
small pom in `deploy/kafka/`) into a cache outside git, formats a data directory and
runs `java -cp 'libs/*' kafka.Kafka server.properties` in the background: one process
that is both broker and controller (node 1), listening on 127.0.0.1 only.

    broker = LocalBroker(data_dir="/tmp/kafka", port=9092)
    broker.start()              # idempotent: reuses a broker already running there
    broker.bootstrap            # "127.0.0.1:9092"
    broker.stop()

Cache layout (``$GENRE_KAFKA_HOME``, default ``~/.cache/genre/kafka``)::

    kafka-<version>/libs/*.jar      # resolved by mvn dependency:copy-dependencies
    kafka-<version>/libs/.complete  # written last: a half-resolved cache is never used

Data directory layout::

    server.properties  broker.log  broker.pid  logs/ (the log.dirs, formatted once)

Security: an optional `SaslSslListener` adds a ``SASL_SSL://127.0.0.1:<port>`` listener
beside the PLAINTEXT one (which stays for inter-broker traffic and administration).
SCRAM users are written at format time with Kafka's own StorageTool (``--add-scram``),
and can be added to a running broker with `LocalBroker.add_scram_user`.

No shell is used anywhere: every subprocess gets an argument list.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from shared.settings import REPO_ROOT

log = logging.getLogger(__name__)

KAFKA_DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
POM_PATH = KAFKA_DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "log4j2.yaml"
NODE_ID = 1
DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped."""


class ToolMissing(BrokerError):
    """java or mvn is not installed; the message says what to install."""


# --------------------------------------------------------------------------------------
# Cache and jars
# --------------------------------------------------------------------------------------


def kafka_home() -> Path:
    """The jar cache: ``$GENRE_KAFKA_HOME`` or ``~/.cache/genre/kafka`` (XDG honoured)."""
    env = os.environ.get("GENRE_KAFKA_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genre" / "kafka"


def kafka_version(pom: Path = POM_PATH) -> str:
    """The Kafka version pinned in ``deploy/kafka/pom.xml`` (``<kafka.version>``)."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text(encoding="utf-8"))
    if not match:
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return match.group(1)


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise ToolMissing(
            "java not found: Kafka needs a Java 17+ runtime "
            "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless; or set JAVA_HOME)"
        )
    return java


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise ToolMissing(
            "mvn not found: the Kafka jars are resolved from Maven Central once "
            "(Debian/Ubuntu: apt-get install maven), or point GENRE_KAFKA_HOME at a cache "
            "that already holds kafka-<version>/libs"
        )
    return mvn


def _local_repo_has(version: str) -> bool:
    """Whether ~/.m2 already holds kafka_2.13:<version> (then mvn can run offline)."""
    repo = Path.home() / ".m2" / "repository" / "org" / "apache" / "kafka" / "kafka_2.13" / version
    return (repo / f"kafka_2.13-{version}.jar").is_file()


def ensure_jars(home: Path | None = None, version: str | None = None, *, quiet: bool = True) -> Path:
    """Return the ``libs`` folder of Kafka `version`, resolving it with Maven if absent.

    Safe against concurrent callers (a file lock) and interrupted runs (the jars go to
    a temporary folder that is renamed into place, then ``.complete`` is written).
    Maven runs offline (``-o``) when the local repository already has the artifacts.
    """
    home = Path(home) if home else kafka_home()
    version = version or kafka_version()
    libs = home / f"kafka-{version}" / "libs"
    if (libs / ".complete").is_file():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").is_file():
            return libs
        mvn = find_mvn()
        find_java()
        tmp = libs.parent / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        attempts = [["-o"], []] if _local_repo_has(version) else [[]]
        err = ""
        for extra in attempts:
            cmd = [mvn, "-B", *(["-q"] if quiet else []), *extra, "-f", str(POM_PATH),
                   f"-Dkafka.version={version}", "dependency:copy-dependencies",
                   f"-DoutputDirectory={tmp}"]
            log.info("resolving Kafka %s jars: %s", version, " ".join(cmd))
            t0 = time.monotonic()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            if proc.returncode == 0 and any(tmp.glob(f"kafka_2.13-{version}.jar")):
                log.info("Kafka jars resolved in %.1f s", time.monotonic() - t0)
                break
            err = proc.stdout[-3000:]
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise BrokerError(f"mvn could not resolve the Kafka {version} jars (is Maven Central reachable?):\n{err}")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (libs / ".complete").write_text(version + "\n")
    return libs


# --------------------------------------------------------------------------------------
# Security listener description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScramUser:
    name: str
    password: str
    mechanism: str = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        if self.mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"unknown SCRAM mechanism {self.mechanism!r}; use one of {SCRAM_MECHANISMS}")
        if not self.name or any(c in self.name for c in ',=[]"\n'):
            raise ValueError(f"SCRAM user name {self.name!r} must be non-empty without , = [ ] \" or newlines")
        if '"' in self.password or "\n" in self.password:
            raise ValueError("SCRAM passwords must not contain double quotes or newlines")


@dataclass(frozen=True)
class SaslSslListener:
    """An extra ``SASL_SSL`` listener for clients (the security suite).

    The key store holds the broker's private key and certificate: PKCS12/JKS with a
    password, or ``keystore_type="PEM"`` for a PEM file with a PKCS#8 key and the
    certificate chain (no keytool needed). The trust store is only needed when
    `client_auth` is "required"/"requested" (mutual TLS). The certificate must name
    127.0.0.1 (IP SAN) for clients that check host names.
    """

    keystore_location: str
    keystore_password: str = ""
    keystore_type: str = "PKCS12"
    key_password: str = ""
    truststore_location: str = ""
    truststore_password: str = ""
    truststore_type: str = "PKCS12"
    port: int = 0
    """0 picks a free port at start()."""
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-512", "PLAIN")
    scram_users: tuple[ScramUser, ...] = ()
    """Created at format time with StorageTool --add-scram (a fresh data dir)."""
    plain_users: tuple[tuple[str, str], ...] = ()
    """(name, password) pairs for SASL/PLAIN (kept in the broker's JAAS config)."""
    client_auth: str = "none"
    failed_auth_delay_ms: int = 0
    """connection.failed.authentication.delay.ms. Kafka's default (100) holds back the
    error response together with the close; kafka-python 3.0 then often sees only a
    closed socket. 0 lets clients (and `shared.kafka_io`) report bad credentials."""

    def __post_init__(self) -> None:
        for mech in self.mechanisms:
            if mech not in ("PLAIN", *SCRAM_MECHANISMS):
                raise ValueError(f"unsupported SASL mechanism {mech!r}")
        for name, password in self.plain_users:
            if any(c in name + password for c in '"\\\n;'):
                raise ValueError("PLAIN user names and passwords must not contain \" \\ ; or newlines")

    def server_properties(self, port: int) -> dict[str, str]:
        ln = "listener.name.sasl_ssl"
        props = {
            f"{ln}.sasl.enabled.mechanisms": ",".join(self.mechanisms),
            f"{ln}.ssl.keystore.location": str(self.keystore_location),
            f"{ln}.ssl.keystore.type": self.keystore_type,
            f"{ln}.ssl.client.auth": self.client_auth,
            f"{ln}.ssl.endpoint.identification.algorithm": "",
            "connection.failed.authentication.delay.ms": str(self.failed_auth_delay_ms),
        }
        if self.keystore_password:
            props[f"{ln}.ssl.keystore.password"] = self.keystore_password
        if self.key_password:
            props[f"{ln}.ssl.key.password"] = self.key_password
        if self.truststore_location:
            props[f"{ln}.ssl.truststore.location"] = str(self.truststore_location)
            props[f"{ln}.ssl.truststore.type"] = self.truststore_type
            if self.truststore_password:
                props[f"{ln}.ssl.truststore.password"] = self.truststore_password
        for mech in self.mechanisms:
            key = f"{ln}.{mech.lower()}.sasl.jaas.config"
            if mech == "PLAIN":
                users = " ".join(f'user_{n}="{p}"' for n, p in self.plain_users)
                props[key] = f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};".replace("  ", " ")
            else:
                props[key] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return props


# --------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _random_cluster_id() -> str:
    """A Kafka Uuid string (22 url-safe base64 chars), as `StorageTool random-uuid` makes."""
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


def _escape_property(value: str) -> str:
    """Escape a java.util.Properties value (backslashes, newlines, leading spaces)."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if out.startswith(" "):
        out = "\\" + out
    return out


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no broker log)"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: str
    ready: bool = False
    sasl_ssl_bootstrap: str | None = None
    detail: str = ""


@dataclass
class LocalBroker:
    """A single-node KRaft broker+controller on 127.0.0.1 run from the cached jars.

    `port`/`controller_port` 0 pick free ports at start(); on a restart of an existing
    data dir the ports recorded in its server.properties are reused (clients keep their
    bootstrap address).
    """

    data_dir: Path
    port: int = DEFAULT_PORT
    controller_port: int = 0
    heap: str = DEFAULT_HEAP
    kafka_home: Path | None = None
    version: str | None = None
    sasl_ssl: SaslSslListener | None = None
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    offsets_partitions: int = 8
    """__consumer_offsets partitions (Kafka's default 50 slows down a small local node)."""
    log_level: str = field(default_factory=lambda: os.environ.get("GENRE_KAFKA_LOG_LEVEL", "INFO"))
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    sasl_ssl_port: int = field(default=0, init=False)
    timings: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.version = self.version or kafka_version()

    # ---- paths ------------------------------------------------------------------------
    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.sasl_ssl_port}" if self.sasl_ssl and self.sasl_ssl_port else None

    # ---- configuration ----------------------------------------------------------------
    def _recorded_ports(self) -> dict[str, int]:
        """Ports from an existing server.properties (a restart keeps its addresses)."""
        ports: dict[str, int] = {}
        try:
            text = self.properties_path.read_text(encoding="utf-8")
        except OSError:
            return ports
        m = re.search(r"^listeners=(.*)$", text, re.M)
        if m:
            for item in m.group(1).split(","):
                name, _, addr = item.partition("://")
                if addr.rpartition(":")[2].isdigit():
                    ports[name.strip()] = int(addr.rpartition(":")[2])
        return ports

    def _choose_ports(self) -> None:
        recorded = self._recorded_ports()
        if not self.port:
            self.port = recorded.get("PLAINTEXT") or free_port()
        if not self.controller_port:
            rec = recorded.get("CONTROLLER")
            self.controller_port = rec if rec and not _port_open("127.0.0.1", rec) else free_port()
        if self.sasl_ssl is not None:
            self.sasl_ssl_port = self.sasl_ssl.port or recorded.get("SASL_SSL") or free_port()

    def server_properties(self) -> dict[str, str]:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.sasl_ssl is not None:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            advertised.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            protocol_map.append("SASL_SSL:SASL_SSL")
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # Static quorum: the data dir survives a change of controller port.
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(self.log_dirs),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": str(self.offsets_partitions),
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # Topics override max.message.bytes where they need more (shared/topics.py).
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "socket.request.max.bytes": str(100 * 1024 * 1024),
        }
        if self.sasl_ssl is not None:
            props.update(self.sasl_ssl.server_properties(self.sasl_ssl_port))
        props.update({k: str(v) for k, v in self.extra_properties.items()})
        return props

    def write_properties(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# Written by shared/broker.py (LocalBroker); rewritten at every start."]
        lines += [f"{k}={_escape_property(v)}" for k, v in self.server_properties().items()]
        tmp = self.properties_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)  # may hold key store and PLAIN passwords
        tmp.replace(self.properties_path)
        return self.properties_path

    # ---- java invocation --------------------------------------------------------------
    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        libs = ensure_jars(self.kafka_home, self.version)
        return [
            find_java(),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.root.level={self.log_level}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            str(libs / "*"),  # expanded by java itself, not a shell
            main_class,
            *args,
        ]

    def is_formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    def format(self, scram_users: Iterable[ScramUser] = ()) -> None:
        """Format the log dir (once) with a fresh cluster id and any SCRAM users."""
        if self.is_formatted():
            return
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        args = ["format", "--cluster-id", _random_cluster_id(), "--config", str(self.properties_path)]
        for user in scram_users:
            args += ["--add-scram", f'{user.mechanism}=[name={user.name},password="{user.password}"]']
        t0 = time.monotonic()
        proc = subprocess.run(
            self._java_cmd("kafka.tools.StorageTool", *args),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )
        self.timings["format_s"] = time.monotonic() - t0
        if proc.returncode != 0 or not self.is_formatted():
            raise BrokerError(f"formatting {self.log_dirs} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")

    # ---- lifecycle ----------------------------------------------------------------------
    def read_pid(self) -> int | None:
        """The pid of the broker running on this data dir, or None (stale files ignored)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        cmd = _cmdline(pid)
        if cmd and ("kafka.Kafka" not in cmd or str(self.properties_path) not in cmd):
            return None  # pid reused by another process
        return pid

    def start(self, timeout: float = 90.0, *, foreground: bool = False) -> "LocalBroker":
        """Start the broker (or adopt the one already running on this data dir) and wait
        until a kafka-python client can fetch cluster metadata from it."""
        find_java()
        existing = self.read_pid()
        if existing is not None:
            recorded = self._recorded_ports()
            self.port = recorded.get("PLAINTEXT", self.port)
            self.controller_port = recorded.get("CONTROLLER", self.controller_port)
            self.sasl_ssl_port = recorded.get("SASL_SSL", 0)
            log.info("broker already running (pid %s) on %s", existing, self.bootstrap)
            self.wait_ready(timeout, pid=existing)
            return self
        self._choose_ports()
        if _port_open("127.0.0.1", self.port):
            raise BrokerError(
                f"port {self.port} on 127.0.0.1 is already in use by another process "
                f"(another broker?): choose another with --port, or stop that process"
            )
        t0 = time.monotonic()
        ensure_jars(self.kafka_home, self.version)
        self.timings["jars_s"] = time.monotonic() - t0
        self.write_properties()
        self.format(self.sasl_ssl.scram_users if self.sasl_ssl else ())
        cmd = self._java_cmd("kafka.Kafka", str(self.properties_path))
        if foreground:
            return self._run_foreground(cmd)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logfile:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True, close_fds=True,
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self.wait_ready(timeout, pid=self._proc.pid)
        except BaseException:
            self.stop(grace=5)
            raise
        self.timings["ready_s"] = time.monotonic() - t0
        log.info("Kafka %s ready on %s in %.1f s", self.version, self.bootstrap, self.timings["ready_s"])
        return self

    def _run_foreground(self, cmd: list[str]) -> "LocalBroker":
        """Run in the foreground, logging to the terminal; Ctrl-C/SIGTERM stop it cleanly."""
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, cwd=self.data_dir)
        self._proc = proc
        self.pid_path.write_text(f"{proc.pid}\n")

        def forward(signum: int, _frame: object) -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                try:
                    proc.wait()
                    break
                except KeyboardInterrupt:
                    forward(signal.SIGINT, None)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.pid_path.unlink(missing_ok=True)
        return self

    def wait_ready(self, timeout: float = 90.0, *, pid: int | None = None) -> None:
        """Poll until a metadata request succeeds on the PLAINTEXT listener.

        Fails early, with the log tail, if the broker process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"the Kafka broker exited with status {self._proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self._proc is None and pid is not None and not _pid_alive(pid):
                raise BrokerError(f"the Kafka broker (pid {pid}) died; last lines of {self.log_path}:\n{_tail(self.log_path)}")
            if _port_open("127.0.0.1", self.port):
                ok, last = probe(self.bootstrap, timeout=min(5.0, max(1.0, deadline - time.monotonic())))
                if ok:
                    return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Kafka broker on {self.bootstrap} was not ready after {timeout:.0f} s ({last}); "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def stop(self, grace: float = 30.0) -> bool:
        """SIGTERM (a controlled shutdown), then SIGKILL after `grace` seconds.

        Returns True if a broker was running."""
        pid = self._proc.pid if self._proc is not None and self._proc.poll() is None else self.read_pid()
        if pid is None:
            self._reap()
            self.pid_path.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self._reap()
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            log.warning("broker pid %s ignored SIGTERM for %.0f s: killing it", pid, grace)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                self._reap()
                if not _pid_alive(pid):
                    break
                time.sleep(0.05)
        self._reap()
        self.pid_path.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker (no controlled shutdown): for fault-injection tests."""
        pid = self._proc.pid if self._proc is not None and self._proc.poll() is None else self.read_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            self._reap()
            time.sleep(0.05)
        self._reap()
        self.pid_path.unlink(missing_ok=True)
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass

    def status(self) -> BrokerStatus:
        pid = self.read_pid()
        recorded = self._recorded_ports()
        port = recorded.get("PLAINTEXT", self.port)
        bootstrap = f"127.0.0.1:{port}" if port else None
        sasl = f"127.0.0.1:{recorded['SASL_SSL']}" if "SASL_SSL" in recorded else None
        if pid is None:
            return BrokerStatus(False, None, bootstrap, str(self.data_dir), sasl_ssl_bootstrap=sasl, detail="not running")
        ready, detail = probe(bootstrap, timeout=5.0) if bootstrap else (False, "no listener recorded")
        return BrokerStatus(True, pid, bootstrap, str(self.data_dir), ready=ready, sasl_ssl_bootstrap=sasl, detail=detail)

    # ---- users ----------------------------------------------------------------------------
    def add_scram_user(self, user: ScramUser) -> None:
        """Create or update a SCRAM credential on the running broker (via PLAINTEXT)."""
        from kafka.admin import KafkaAdminClient, ScramMechanism, UserScramCredentialUpsertion

        admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap], bootstrap_timeout_ms=10_000)
        try:
            mech = ScramMechanism.SCRAM_SHA_512 if user.mechanism == "SCRAM-SHA-512" else ScramMechanism.SCRAM_SHA_256
            result = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(user.name, mech, user.password)])
            if result.get(user.name):
                raise BrokerError(f"could not set SCRAM credentials of {user.name!r}: {result[user.name]}")
        finally:
            admin.close()

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def probe(bootstrap: str, timeout: float = 5.0, **client_config: object) -> tuple[bool, str]:
    """(True, "") if a kafka-python admin client can fetch cluster metadata from `bootstrap`."""
    from kafka.admin import KafkaAdminClient

    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            bootstrap_timeout_ms=int(timeout * 1000),
            request_timeout_ms=int(max(timeout, 1.0) * 1000) + 1000,
            **client_config,
        )
        admin.describe_cluster()
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        if admin is not None:
            try:
                admin.close()
            except Exception:  # noqa: BLE001
                pass


def default_data_dir() -> Path:
    return kafka_home() / "data"


__all__ = [
    "BrokerError", "BrokerStatus", "LocalBroker", "SaslSslListener", "ScramUser", "ToolMissing",
    "default_data_dir", "ensure_jars", "find_java", "find_mvn", "free_port", "kafka_home",
    "kafka_version", "probe",
]


def external_or_local(work_dir: Path, timeout: float = 180.0) -> tuple[str, "LocalBroker | None"]:
    """GENRE_KAFKA_BOOTSTRAP when it answers, else a fresh LocalBroker under `work_dir`
    (returned so the caller stops it): the benchmarks' broker."""
    from shared import kafka_io
    from shared.settings import Settings

    external = os.environ.get("GENRE_KAFKA_BOOTSTRAP")
    if external:
        try:
            kafka_io.wait_for_broker(Settings.from_env(bootstrap_servers=external), timeout=5)
            return external, None
        except kafka_io.KafkaIOError as exc:
            log.warning("GENRE_KAFKA_BOOTSTRAP=%s does not answer (%s); starting a local broker", external, exc)
    broker = LocalBroker(Path(work_dir) / "kafka", port=0)
    broker.start(timeout=timeout)
    return broker.bootstrap, broker
