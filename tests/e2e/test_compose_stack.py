"""The compose stack, built and run for real: images from deploy/local/build-images.sh,
`docker compose` with deploy/local/compose.local.yml, and checks against the running
containers.

The tests run in file order on one stack (module fixture) and each prints its figure;
the figures also go to $GENRE_DOCKER_CACHE/stack-report.json. GENRE_DOCKER_BUILD=0 reuses
the images already built instead of running the build script. Needs root (or a running
Docker engine), dockerd, debootstrap, docker compose, kcat and ffmpeg: `.ci/run`
installs them. Without an engine the module is reported as skipped with the reason.

    .venv/bin/python -m pytest -s tests/e2e/test_compose_stack.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from shared.broker import free_port
from shared.content_id import song_id_for_file
from shared.schemas import DeadLetter, M, SchemaError, Verdict, decode
from shared.settings import REPO_ROOT, Settings
from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio
from tests.fixtures.kcat import kcat_produce
from tests.fixtures.prometheus import dashboard_queries, has_data

# the first test also waits for the module fixture: every image built from nothing
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]

PROJECT = "genre-e2e"
GENRE_SERVICES = ("chunker", "extractor", "classifier")
BUILD_SCRIPT = REPO_ROOT / "deploy" / "local" / "build-images.sh"
OVERRIDE = REPO_ROOT / "deploy" / "local" / "compose.local.yml"
SETTINGS = Settings()


def docker_cache() -> Path:
    env = os.environ.get("GENRE_DOCKER_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(env) if env else base / "genre" / "docker"


def say(msg: str) -> None:
    print(f"[compose-stack] {msg}", flush=True)


def run(cmd: list[str], *, timeout: float = 600, check: bool = True, env: dict | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{proc.stdout.decode(errors='replace')[-3000:]}\n"
                             f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def compose_command() -> list[str]:
    """Docker Compose v2: the binary tools/install-validators.sh installs, else the plugin."""
    local = REPO_ROOT / "tools" / "bin" / "docker-compose"
    return [str(local)] if local.is_file() else ["docker", "compose"]


def engine_problem() -> str:
    """Why this machine cannot run the stack ('' when it can)."""
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io)"
    if run([*compose_command(), "version"], check=False).returncode != 0:
        return "no Docker Compose v2 (tools/install-validators.sh installs one)"
    if run(["docker", "info"], check=False).returncode == 0:
        return ""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return "no Docker engine answers, and this user cannot start dockerd"
    return ""


@dataclass
class Stack:
    env: dict[str, str]
    songs: Path
    kafka_port: int
    prometheus_port: int
    report: dict = field(default_factory=dict)
    t_up: float = 0.0

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return run([*compose_command(), "-p", PROJECT, "-f", "docker-compose.yml", "-f", str(OVERRIDE), *args],
                   env=self.env, timeout=timeout, check=check)

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout.decode().split()
        return sorted(out)

    def produce(self, *names: str) -> dict[str, str]:
        """Submit songs from the songs folder with the CLI image: {filename: song_id}."""
        out = self.compose("run", "--rm", "-T", "cli", "produce", "--json", *[f"/songs/{n}" for n in names])
        ids = {}
        for line in out.stdout.decode().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                ids[Path(rec["filename"]).name] = rec["song_id"]
        assert len(ids) == len(names), out.stdout.decode()
        return ids

    def verdict_records(self, want: set[str], timeout: float) -> dict[str, list[Verdict]]:
        """Every verdict record on the results topic (from the beginning) until each song
        of `want` has one; all records per song id, replays included."""
        return self.records(SETTINGS.topic_verdicts, Verdict, want, timeout)

    def records(self, topic: str, mtype: type[M], want: set[str], timeout: float) -> dict[str, list[M]]:
        """Every `mtype` record on `topic` from the beginning, by record key, until each key
        of `want` has one."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=f"127.0.0.1:{self.kafka_port}",
                                 auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                 consumer_timeout_ms=1000)
        records: dict[str, list[M]] = defaultdict(list)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for msg in consumer:
                    try:
                        records[(msg.key or b"").decode("utf-8", "replace")].append(decode(msg.value, mtype))
                    except SchemaError:
                        continue
                if want <= set(records):
                    return records
        finally:
            consumer.close()
        missing = sorted(want - set(records))
        logs = self.compose("logs", "--tail", "30", check=False).stdout.decode(errors="replace")
        raise AssertionError(f"no {mtype.TYPE} on {topic} within {timeout:.0f} s for {len(missing)} keys: "
                             f"{missing[:5]}\n{logs[-6000:]}")

    def prometheus(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.prometheus_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def figure(self, key: str, value) -> None:
        self.report[key] = value
        say(f"{key}: {value}")


def write_songs(folder: Path, n: int, first_seed: int) -> list[str]:
    names = []
    for i in range(n):
        seed = first_seed + i
        genre = SYNTH_GENRES[seed % len(SYNTH_GENRES)]
        name = f"song-{seed:03d}.mp3"
        write_audio(folder / name, make_song(genre, 40 + (seed % 3) * 10, seed))
        names.append(name)
    return names


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    problem = engine_problem()
    if problem:
        pytest.skip(f"the compose stack cannot run here: {problem}")
    cache = docker_cache()
    t0 = time.monotonic()
    if os.environ.get("GENRE_DOCKER_BUILD", "1") != "0":  # 0: reuse the images already built
        proc = run(["bash", str(BUILD_SCRIPT)], timeout=2400, env={**os.environ, "GENRE_DOCKER_CACHE": str(cache)})
        say(proc.stderr.decode(errors="replace").strip())
    songs = tmp_path_factory.mktemp("compose-songs")
    songs.chmod(0o755)
    kafka_port, prometheus_port = free_port(), free_port()
    env = {**os.environ, "SONGS_DIR": str(songs), "KAFKA_EXTERNAL_PORT": str(kafka_port),
           "PROMETHEUS_PORT": str(prometheus_port), "GENRE_TOPIC_PARTITIONS": "6", "BIND_ADDRESS": "127.0.0.1"}
    s = Stack(env=env, songs=songs, kafka_port=kafka_port, prometheus_port=prometheus_port)
    s.report["images"] = json.loads((cache / "build-report.json").read_text())
    s.figure("build_s", round(time.monotonic() - t0))
    s.compose("down", "-v", "--remove-orphans", check=False)
    try:
        s.t_up = time.monotonic()
        s.compose("up", "-d", timeout=900)
        s.figure("up_s", round(time.monotonic() - s.t_up, 1))
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", check=False, timeout=300)
        (cache / "stack-report.json").write_text(json.dumps(s.report, indent=1) + "\n")


def assigned_partitions(assignment: object) -> set[tuple[str, int]]:
    """(topic, partition) pairs of a consumer group member's assignment, as kafka-python's
    describe_groups gives it (a dict, or the decoded ConsumerProtocolAssignment)."""
    if assignment is None:
        return set()
    tps = assignment.get("assigned_partitions") if isinstance(assignment, dict) \
        else getattr(assignment, "assigned_partitions", None)
    pairs = set()
    for tp in tps or ():
        topic, parts = (tp["topic"], tp["partitions"]) if isinstance(tp, dict) else (tp.topic, tp.partitions)
        pairs |= {(topic, p) for p in parts}
    return pairs


def test_images_are_built_and_lean(stack: Stack) -> None:
    images = stack.report["images"]
    for name, row in images.items():
        say(f"{name:40s} {row['size_mb']:6d} MB {row['build_s']:5d} s")
    for service in ("chunker", "extractor"):
        out = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", f"genre-{service}:latest",
                   "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is None)"]).stdout.decode()
        assert out.strip() == "True", f"the {service} image carries TensorFlow"


def test_twenty_songs_equal_genre_classify(stack: Stack) -> None:
    names = write_songs(stack.songs, 20, first_seed=0)
    ids = stack.produce(*names)
    records = stack.verdict_records(set(ids.values()), timeout=600)
    first = min(v.verdict_at for vs in records.values() for v in vs)
    stack.figure("first_verdict_after_up_s", round(time.monotonic() - stack.t_up - (time.time() - first), 1))
    stack.figure("verdicts_for_20_songs", len(records))

    proc = run([str(REPO_ROOT / ".venv" / "bin" / "genre"), "classify", "--json",
                *[str(stack.songs / n) for n in names]], timeout=900)
    offline = {}
    for line in proc.stdout.decode().splitlines():
        rec = json.loads(line)
        offline[Path(rec["file"] if "file" in rec else rec["filename"]).name] = rec
    agree = 0
    for name, song_id in ids.items():
        v = records[song_id][0]
        assert v.status == "ok", v
        assert v.genre == offline[name]["genre"], (name, v.genre, offline[name])
        agree += 1
    stack.figure("agreement_with_genre_classify", f"{agree}/{len(ids)}")


def test_kcat_submits_a_song_as_raw_audio(stack: Stack) -> None:
    """A client we did not write sends the file itself to the audio topic from the host
    (the EXTERNAL listener); its verdict comes back under the file's content hash. A record
    without its filename header is a dead letter with the reason, bytes that are not
    audio an error verdict."""
    (name,) = write_songs(stack.songs, 1, first_seed=50)
    path = stack.songs / name
    client = Settings(bootstrap_servers=f"127.0.0.1:{stack.kafka_port}")
    t0 = time.monotonic()
    proc = kcat_produce(client, path, key="compose-e2e", headers=(f"filename={name}",))
    assert proc.returncode == 0, proc.stderr
    song_id = song_id_for_file(path)
    v = stack.verdict_records({song_id}, timeout=300)[song_id][0]
    stack.figure("kcat_song_verdict", f"{v.status} {v.genre} in {time.monotonic() - t0:.1f} s "
                                      f"({path.stat().st_size} bytes, id {song_id})")
    assert v.status == "ok" and v.filename == name, v
    offline = json.loads(run([str(REPO_ROOT / ".venv" / "bin" / "genre"), "classify", "--json", str(path)],
                             timeout=300).stdout.decode().splitlines()[0])
    assert v.genre == offline["genre"], (v.genre, offline)

    text = stack.songs / "notes.mp3"
    text.write_text("these are liner notes, not audio\n" * 200)
    assert kcat_produce(client, text, key="compose-e2e", headers=("filename=notes.mp3",)).returncode == 0
    assert kcat_produce(client, path, key="compose-e2e-nameless").returncode == 0
    text_id = song_id_for_file(text)
    bad = stack.verdict_records({text_id}, timeout=120)[text_id][0]
    (dead, *_) = stack.records(SETTINGS.topic_deadletter, DeadLetter, {"compose-e2e-nameless"},
                               timeout=120)["compose-e2e-nameless"]
    stack.figure("kcat_bad_records", f"text: {bad.status} ({bad.error[:60]}); no filename: dead letter "
                                     f"({dead.reason[:60]})")
    assert bad.status == "error" and "audio" in bad.error, bad
    assert dead.topic == SETTINGS.topic_audio and "filename" in dead.reason, dead


def test_three_extractors_share_partitions_and_are_scraped(stack: Stack) -> None:
    stack.compose("up", "-d", "--scale", "extractor=3", "--no-recreate")
    assert len(stack.containers("extractor")) == 3
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{stack.kafka_port}")
    try:
        deadline = time.monotonic() + 180
        while True:
            desc = admin.describe_groups([SETTINGS.group_extractor])[SETTINGS.group_extractor]
            owners = {m["member_id"]: assigned_partitions(m.get("member_assignment")) for m in desc["members"]}
            if desc["group_state"] == "Stable" and len(owners) == 3 and all(owners.values()):
                break
            assert time.monotonic() < deadline, f"extractor group never had 3 members with partitions: {desc}"
            time.sleep(2)
    finally:
        admin.close()
    stack.figure("extractor_partitions_per_replica", sorted(len(p) for p in owners.values()))

    # songs through the three replicas, then every replica scraped and the dashboards filled
    names = write_songs(stack.songs, 6, first_seed=100)
    ids = stack.produce(*names)
    stack.verdict_records(set(ids.values()), timeout=300)
    deadline = time.monotonic() + 120
    while True:
        targets = stack.prometheus("/api/v1/targets")["data"]["activeTargets"]
        up = defaultdict(int)
        for t in targets:
            up[t["labels"]["job"]] += t["health"] == "up"
        if up["extractor"] == 3 and up["chunker"] == 1 and up["classifier"] == 1:
            break
        assert time.monotonic() < deadline, f"targets up: {dict(up)}"
        time.sleep(3)
    stack.figure("prometheus_targets_up", dict(up))

    queries = dashboard_queries()
    deadline = time.monotonic() + 120
    while True:
        missing = [w for w, q in queries if not has_data(stack.prometheus("/api/v1/query", query=q)["data"]["result"])]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    stack.figure("dashboard_queries_with_data", f"{len(queries) - len(missing)}/{len(queries)}")
    assert not missing, missing


def test_killed_extractor_and_classifier_lose_no_song(stack: Stack) -> None:
    names = write_songs(stack.songs, 10, first_seed=200)
    ids = stack.produce(*names)
    want = set(ids.values())
    # the first verdict of this batch, then kill an extractor and the classifier mid-run
    deadline = time.monotonic() + 300
    while True:
        seen = stack.verdict_records(set(), timeout=2)
        if want & set(seen) or time.monotonic() > deadline:
            break
    done_before = len(want & set(seen))
    victims = [stack.containers("extractor")[0], *stack.containers("classifier")]
    run(["docker", "kill", *victims])
    stack.figure("songs_done_when_killed", f"{done_before}/{len(want)}")
    stack.compose("up", "-d", "--scale", "extractor=3")
    records = stack.verdict_records(want, timeout=600)
    conflicting = [sid for sid in want if len({v.identity() for v in records[sid]}) != 1]
    stack.figure("songs_after_kill", f"{len(want & set(records))}/{len(want)} with a verdict, "
                                     f"{sum(len(records[s]) for s in want)} records, {len(conflicting)} conflicting")
    assert not conflicting, {sid: [v.identity() for v in records[sid]] for sid in conflicting}


def test_containers_run_as_10001_read_only_and_healthy(stack: Stack) -> None:
    checked = 0
    for service in GENRE_SERVICES:
        for cid in stack.containers(service):
            uid = run(["docker", "exec", cid, "id", "-u"]).stdout.decode().strip()
            assert uid == "10001", (service, uid)
            probe = run(["docker", "exec", cid, "python", "-c", "open('/probe', 'w')"], check=False)
            assert probe.returncode != 0 and b"Read-only file system" in probe.stderr, (service, probe.stderr)
            deadline = time.monotonic() + 180
            while True:
                health = run(["docker", "inspect", "--format", "{{.State.Health.Status}}", cid]).stdout.decode().strip()
                if health == "healthy":
                    break
                assert time.monotonic() < deadline, f"{service} {cid[:12]} health: {health}"
                time.sleep(3)
            checked += 1
    stack.figure("containers_uid_10001_read_only_healthy", checked)


def test_down_leaves_nothing(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans")
    label = f"label=com.docker.compose.project={PROJECT}"
    left = {kind: run(["docker", kind, "ls", "-q", "--filter", label] if kind != "container"
                      else ["docker", "ps", "-aq", "--filter", label]).stdout.decode().split()
            for kind in ("container", "volume", "network")}
    stack.figure("left_after_down", {k: len(v) for k, v in left.items()})
    assert not any(left.values()), left
