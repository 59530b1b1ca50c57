#!/usr/bin/env bash
# Install everything (system packages, Python deps, Kafka jars, validators) and run the
# whole test suite, slow tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --test
# Kafka 4 jars from Maven Central, into ~/.cache/genre/kafka (once).
.venv/bin/genre broker fetch
if [ -x tools/install-validators.sh ]; then ./tools/install-validators.sh; fi
# The real sonic-annotator host and plugins, when the reference folder is beside the repo.
SA_DIR="${GENRE_REFERENCE_DIR:-$(cd .. && pwd)/shared}/sonic-annotator"
if [ -x "$SA_DIR/sonic-annotator" ]; then
  export PATH="$SA_DIR:$PATH" VAMP_PATH="$SA_DIR/vamp"
fi
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest "$@"
