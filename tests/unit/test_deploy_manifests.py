"""The deployment files parse and pass the real schemas, offline.

- every kustomize overlay builds (kustomize v5.8.2) and every resource it outputs passes
  `kubeconform -strict` against the Kubernetes 1.33 JSON schemas (PyPI
  kubernetes-validate) and the KEDA / Strimzi CRD schemas shipped in k8s/schemas/;
- docker-compose.yml (and the GPU override) passes Docker Compose's own `config`
  and the compose-spec JSON schema;
- every pod and container (Kubernetes and compose) runs as non-root with a read-only
  root file system and no capabilities; secrets are referenced, never committed;
- the extractor's autoscaling never exceeds the chunk topic's partitions;
- the Grafana dashboard and the alert rules use only metrics the services export, and
  the rules pass `promtool check rules`.

The validators come from `tools/install-validators.sh` (into tools/bin); a test that needs
one that is missing is skipped with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "tools" / "bin"
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
K8S_SCHEMA_VERSION = "1.33.0"
K8S_SCHEMAS = BIN / "k8s-schemas" / f"v{K8S_SCHEMA_VERSION}"
COMPOSE_FILES = [ROOT / "docker-compose.yml"]
COMPOSE_GPU = ROOT / "deploy" / "compose.gpu.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
INSTALL_HINT = "run tools/install-validators.sh"

# The metric families of shared/metrics.py as Prometheus exposes them, plus `up`.
KNOWN_METRICS = {
    "up",
    "genre_messages_in_total", "genre_messages_out_total",
    "genre_processing_seconds_bucket", "genre_processing_seconds_sum", "genre_processing_seconds_count",
    "genre_errors_total", "genre_deadletter_total", "genre_consumer_lag", "genre_kafka_reconnects_total",
    "genre_audio_seconds_total",
    "genre_classifier_batch_size_bucket", "genre_classifier_batch_size_sum", "genre_classifier_batch_size_count",
    "genre_classifier_queue_wait_seconds_bucket", "genre_classifier_queue_wait_seconds_sum",
    "genre_classifier_queue_wait_seconds_count",
    "genre_classifier_device", "genre_verdicts_total",
    "genre_end_to_end_seconds_bucket", "genre_end_to_end_seconds_sum", "genre_end_to_end_seconds_count",
    "genre_inflight_songs",
}
PROMQL_WORDS = {
    # functions and aggregations used or likely in the expressions
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "deriv", "delta", "histogram_quantile",
    "absent", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "ceil", "floor", "round", "time",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "label_replace", "vector", "scalar",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}


def tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not installed ({INSTALL_HINT})")
    return path


def run(cmd: list[str | Path], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


def build_overlay(name: str) -> list[dict]:
    res = run([tool("kustomize"), "build", K8S / "overlays" / name])
    assert res.returncode == 0, f"kustomize build overlays/{name} failed:\n{res.stderr}"
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert docs, f"overlays/{name} built nothing"
    return docs


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[dict]]:
    return {name: build_overlay(name) for name in OVERLAYS}


def compose_config(*files: Path) -> dict:
    args: list[str | Path] = [tool("docker-compose"), "--project-directory", ROOT]
    for f in files:
        args += ["-f", f]
    res = run(args + ["--profile", "tools", "config", "--format", "json"])
    assert res.returncode == 0, f"docker compose config failed:\n{res.stderr}"
    return json.loads(res.stdout)


# --------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------


def test_overlays_exist():
    assert {"local", "gpu"} <= set(OVERLAYS), OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_kubeconform_strict(overlay, tmp_path):
    kubeconform = tool("kubeconform")
    if not (K8S_SCHEMAS / "deployment-apps-v1.json").exists():
        pytest.skip(f"Kubernetes schemas missing in {K8S_SCHEMAS} ({INSTALL_HINT})")
    built = run([tool("kustomize"), "build", K8S / "overlays" / overlay])
    assert built.returncode == 0, built.stderr
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(built.stdout)
    res = run([
        kubeconform, "-strict", "-summary", "-output", "json",
        "-kubernetes-version", K8S_SCHEMA_VERSION,
        "-schema-location", f"{K8S_SCHEMAS}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
        "-schema-location", f"{K8S}/schemas/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json",
        out,
    ])
    report = json.loads(res.stdout or "{}")
    problems = [r for r in report.get("resources", []) if r.get("status") != "statusValid"]
    assert res.returncode == 0 and not problems, f"kubeconform:\n{res.stdout}\n{res.stderr}"
    summary = report["summary"]
    n_docs = len([d for d in yaml.safe_load_all(built.stdout) if d])
    assert summary["valid"] == n_docs and summary["skipped"] == 0, summary


def test_kubeconform_rejects_a_broken_manifest(tmp_path):
    """The schemas really bite: unknown fields and wrong types in core and CRD kinds."""
    kubeconform = tool("kubeconform")
    if not (K8S_SCHEMAS / "deployment-apps-v1.json").exists():
        pytest.skip(f"Kubernetes schemas missing ({INSTALL_HINT})")
    docs = build_overlay("gpu")
    for d in docs:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["notAField"] = 1
        elif d["kind"] == "ScaledObject":
            d["spec"]["maxReplicaCount"] = "twelve"
        elif d["kind"] == "KafkaTopic":
            d["spec"]["partitionz"] = 12
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    res = run([
        kubeconform, "-strict", "-output", "json",
        "-schema-location", f"{K8S_SCHEMAS}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
        "-schema-location", f"{K8S}/schemas/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json",
        bad,
    ])
    invalid = {(r["kind"], r["name"]) for r in json.loads(res.stdout)["resources"] if r["status"] == "statusInvalid"}
    kinds = {k for k, _ in invalid}
    assert res.returncode != 0 and {"Deployment", "ScaledObject", "KafkaTopic"} <= kinds, res.stdout


def _pod_specs(doc: dict) -> list[dict]:
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [doc["spec"]]
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened(overlays, overlay):
    pods = 0
    for doc in overlays[overlay]:
        for spec in _pod_specs(doc):
            pods += 1
            where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
            psc = spec.get("securityContext", {})
            assert psc.get("runAsNonRoot") is True, where
            assert psc.get("runAsUser", 0) != 0, where
            assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert spec.get("automountServiceAccountToken") is False, where
            assert spec.get("serviceAccountName") == "genre", where
            for c in spec.get("initContainers", []) + spec["containers"]:
                csc = c.get("securityContext", {})
                cwhere = f"{where} container {c['name']}"
                assert csc.get("readOnlyRootFilesystem") is True, cwhere
                assert csc.get("allowPrivilegeEscalation") is False, cwhere
                assert csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, cwhere
                assert csc.get("privileged", False) is False, cwhere
                assert csc.get("capabilities", {}).get("drop") == ["ALL"], cwhere
                assert not csc.get("capabilities", {}).get("add"), cwhere
                res = c.get("resources", {})
                assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), cwhere
                assert res.get("limits", {}).get("cpu") and res.get("limits", {}).get("memory"), cwhere
                # a read-only root fs needs a writable /tmp
                assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), cwhere
                # secrets only by reference
                for env in c.get("env", []):
                    assert not re.search(r"PASSWORD|SECRET|TOKEN", env["name"]) or "valueFrom" in env, cwhere
    assert pods >= 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_probe_the_metrics_port(overlays, overlay):
    deployments = {d["metadata"]["name"]: d for d in overlays[overlay] if d["kind"] == "Deployment"}
    assert set(deployments) == {"chunker", "extractor", "classifier"}
    for name, d in deployments.items():
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["python", "-m", f"services.{name}"]
        assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, (name, probe)
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "9100"
    kinds = {d["kind"] for d in overlays[overlay]}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy",
            "PersistentVolumeClaim"} <= kinds
    assert "Secret" not in kinds, "secrets are created by the operator, never committed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_fits_the_chunk_topic(overlays, overlay):
    docs = overlays[overlay]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "genre-config")["data"]
    partitions = int(config["GENRE_TOPIC_PARTITIONS"])
    chunk_topic = config["GENRE_TOPIC_CHUNKS"]
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert len(scaled) + len(hpas) == 1, "exactly one autoscaler for the extractor (KEDA or the CPU fallback)"
    for so in scaled:
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == "extractor"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        md = trigger["metadata"]
        assert md["topic"] == chunk_topic
        assert md["consumerGroup"] == config["GENRE_GROUP_EXTRACTOR"]
        assert md["bootstrapServers"] == config["GENRE_KAFKA_BOOTSTRAP"]
        assert int(md["lagThreshold"]) > 0
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"]["name"] == "extractor"
        assert hpa["spec"]["maxReplicas"] <= partitions
    for topic in (d for d in docs if d["kind"] == "KafkaTopic"):
        assert topic["spec"]["partitions"] >= partitions, topic["metadata"]["name"]
        if topic["spec"]["topicName"] == chunk_topic and scaled:
            assert topic["spec"]["partitions"] >= scaled[0]["spec"]["maxReplicaCount"]


def test_strimzi_topics_match_the_code():
    """KafkaTopic resources carry the names, partitions and configs of shared/topics.py."""
    pytest.importorskip("kafka")
    from shared.settings import Settings
    from shared.topics import topic_specs

    docs = [d for d in yaml.safe_load_all((K8S / "components/strimzi-topics/kafkatopics.yaml").read_text()) if d]
    by_name = {d["spec"]["topicName"]: d["spec"] for d in docs}
    specs = topic_specs(Settings())
    assert set(by_name) == {s.name for s in specs}
    for s in specs:
        assert by_name[s.name]["partitions"] == s.partitions, s.name
        assert by_name[s.name]["config"] == s.configs, s.name


def test_gpu_overlay_places_the_classifier_on_gpus(overlays):
    if "gpu" not in overlays:
        pytest.skip("no gpu overlay")
    cls = next(d for d in overlays["gpu"] if d["kind"] == "Deployment" and d["metadata"]["name"] == "classifier")
    spec = cls["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["image"].endswith("-gpu")
    assert spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    others = [d for d in overlays["gpu"] if d["kind"] == "Deployment" and d["metadata"]["name"] != "classifier"]
    for d in others:
        assert "nvidia.com/gpu" not in json.dumps(d)


# --------------------------------------------------------------------------------------
# docker compose
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("files", [COMPOSE_FILES, COMPOSE_FILES + [COMPOSE_GPU]], ids=["cpu", "gpu"])
def test_compose_passes_docker_compose_config(files):
    cfg = compose_config(*files)
    assert {"kafka", "topic-setup", "chunker", "extractor", "classifier", "prometheus", "grafana"} <= set(cfg["services"])


def test_compose_local_override_swaps_images_and_parks_grafana():
    """deploy/local/compose.local.yml: local images, never pulled, Grafana only on request."""
    cfg = compose_config(*COMPOSE_FILES, ROOT / "deploy" / "local" / "compose.local.yml")
    services = cfg["services"]
    assert "grafana" not in services, "Grafana's image is in no reachable registry: it stays behind a profile"
    from shared.broker import kafka_version

    assert services["kafka"]["image"] == f"genre-local/kafka:{kafka_version()}", "the tag build-images.sh gives"
    assert services["prometheus"]["image"].startswith("genre-local/prometheus:")
    for name, s in services.items():
        assert s.get("pull_policy") == "never", name
    assert services["extractor"]["read_only"] and services["extractor"]["user"] == "10001:10001"


def test_compose_matches_the_compose_spec_schema():
    jsonschema = pytest.importorskip("jsonschema", reason=f"jsonschema not installed ({INSTALL_HINT})")
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for f in COMPOSE_FILES + [COMPOSE_GPU]:
        doc = yaml.safe_load(f.read_text())
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, f"{f.name}: " + "; ".join(e.message for e in errors[:5])
    # and the schema bites
    bad = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bad["services"]["chunker"]["read_onyl"] = True
    assert list(validator.iter_errors(bad))


def test_compose_structure_and_hardening():
    """Without the compose binary: the raw YAML, merge keys resolved by PyYAML."""
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("${KAFKA_IMAGE:-apache/kafka:")
    assert "broker,controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert kafka["healthcheck"]["test"]
    for name in ("chunker", "extractor", "classifier"):
        s = services[name]
        assert s["depends_on"]["kafka"]["condition"] == "service_healthy", name
        assert s["depends_on"]["topic-setup"]["condition"] == "service_completed_successfully", name
        assert s["build"]["dockerfile"] == "deploy/Dockerfile" and s["build"]["target"] == name
        assert s["environment"]["GENRE_METRICS_PORT"] == "9100"
        assert "container_name" not in s and "ports" not in s, f"{name} must stay scalable"
    assert services["topic-setup"]["command"][:3] == ["genre", "topics", "create"]
    assert services["topic-setup"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["classifier"]["build"]["args"]["VARIANT"] == "${CLASSIFIER_VARIANT:-cpu}"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, s in services.items():
        user = str(s.get("user", ""))
        assert user and not user.startswith(("0:", "root")) and user != "0", f"{name} must run as non-root"
        assert s.get("cap_drop") == ["ALL"], name
        if name != "kafka":  # the apache/kafka image renders its config at start
            assert s.get("read_only") is True, f"{name} must have a read-only root fs"
        for key, value in (s.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert str(value).startswith("${") or not value, f"{name}: {key} must come from the environment"
    env = (ROOT / ".env").read_text()
    assert not re.search(r"(?im)^\s*\w*(PASSWORD|SECRET|TOKEN)\w*\s*=", env), ".env must hold no secrets"
    for key in ("KAFKA_IMAGE", "PROMETHEUS_IMAGE", "GRAFANA_IMAGE", "PROMETHEUS_PORT", "GRAFANA_PORT"):
        assert re.search(rf"(?m)^{key}=\S+", env), key


def test_compose_prometheus_scrapes_every_service():
    cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for name in ("chunker", "extractor", "classifier"):
        sd = jobs[name]["dns_sd_configs"][0]
        assert sd["names"] == [name] and sd["port"] == 9100  # every replica of --scale
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = " ".join(doc["services"]["grafana"]["volumes"])
    assert "deploy/grafana/provisioning" in mounts and "deploy/grafana/dashboards" in mounts


# --------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------


def test_dockerfile_targets_are_non_root_and_multi_stage():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", text)
    assert {"chunker", "extractor", "classifier", "py-build", "sonic-annotator-build"} <= set(stages)
    for target in ("chunker", "extractor", "classifier"):
        body = re.search(rf"(?ims)^FROM \S+ AS {target}\n(.*?)(?=^FROM |\Z)", text).group(1)
        users = re.findall(r"(?m)^USER\s+(\S+)", body)
        assert users and users[-1].split(":")[0] == "10001", target
        assert f'"services.{target}"' in body, target
        assert "build-essential" not in body, f"{target} runtime image carries a compiler"
    assert "ARG VARIANT=cpu" in text and "classifier-${VARIANT}.txt" in text
    # sonic-annotator and plugins at the golden commits, with the golden fixes
    script = (ROOT / "deploy/extractor/build-sonic-annotator.sh").read_text()
    for pin in ("a0e53dd3330d30026de9142e29746409fb0f3189", "b403f10819e9b51e3aa7562ffe40d753fccff6f3",
                "c918afc070f79489758bb2dab6895972bd82066b", "e34a3cc188332ed7c33cd9257ef164de5b587191",
                "be50e19670d7702b706581d71f84d55c5ade290e", "f0d3ab2952b21d287b481759bda986427df10ef7",
                "-include utility -include limits -include cstdint -include memory", "repoint.pri.disabled"):
        assert pin in script, pin
    res = subprocess.run(["bash", "-n", str(ROOT / "deploy/extractor/build-sonic-annotator.sh")], capture_output=True)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------------------
# Grafana and Prometheus
# --------------------------------------------------------------------------------------


def _metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series (not functions, labels, keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)                    # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)                   # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1()", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = m.group(0)
        after = text[m.end():].lstrip()
        if word in PROMQL_WORDS or after.startswith("("):
            continue
        if re.fullmatch(r"\d+(e\d+)?|[smhdwy]", word):
            continue
        names.add(word)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        stack = list(dash.get("panels", []))
        while stack:
            p = stack.pop()
            stack.extend(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((f"{path.name}: {p['title']}", t["expr"]))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_metric_name_extraction_is_sound():
    assert _metric_names('sum by (service, topic) (rate(genre_messages_in_total{service="x"}[1m]))') == {"genre_messages_in_total"}
    assert _metric_names("histogram_quantile(0.95, sum by (le) (rate(foo_bucket[5m]))) > 1") == {"foo_bucket"}


def test_dashboard_shows_every_pipeline_metric_and_only_known_ones():
    assert DASHBOARDS, "no dashboard under deploy/grafana/dashboards"
    exprs = dashboard_exprs()
    unknown = {(where, n) for where, e in exprs for n in _metric_names(e) - KNOWN_METRICS}
    assert not unknown, f"unknown metrics: {sorted(unknown)}"
    assert all("$" not in e for _, e in exprs), "no Grafana variables: each expr runs as-is in Prometheus"
    used = set().union(*(_metric_names(e) for _, e in exprs))
    for needed in ("genre_messages_in_total", "genre_messages_out_total", "genre_consumer_lag",
                   "genre_processing_seconds_bucket", "genre_classifier_batch_size_bucket",
                   "genre_classifier_device", "genre_errors_total", "genre_deadletter_total",
                   "genre_verdicts_total", "genre_end_to_end_seconds_bucket"):
        assert needed in used, needed
    dash = json.loads(DASHBOARDS[0].read_text())
    ds_uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds_uids == {prov["datasources"][0]["uid"]}


def test_dashboard_json_is_generated():
    res = subprocess.run([sys.executable, str(ROOT / "deploy/grafana/build_dashboard.py"), "--check"])
    assert res.returncode == 0, "run python deploy/grafana/build_dashboard.py"


def test_alert_rules_use_known_metrics_and_cover_down_lag_and_dead_letters():
    exprs = alert_exprs()
    unknown = {(name, n) for name, e in exprs for n in _metric_names(e) - KNOWN_METRICS}
    assert not unknown, f"unknown metrics: {sorted(unknown)}"
    names = {name for name, _ in exprs}
    assert {"GenreServiceDown", "GenreConsumerLagGrowing", "GenreDeadLetterNonEmpty"} <= names


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    res = run([promtool, "check", "rules", ALERTS])
    assert res.returncode == 0, res.stdout + res.stderr
    res = run([promtool, "check", "config", ROOT / "deploy/prometheus/prometheus.yml"])
    assert res.returncode == 0, res.stdout + res.stderr
