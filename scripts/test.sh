#!/usr/bin/env bash
# Install everything (system packages, Python deps, Kafka jars, validators) and run the
# whole test suite, slow tests included. Extra arguments go to pytest. Then mutation testing
# of the core modules the change touches (scripts/mutation.sh --changed: against the merge
# base with origin/main, every module without one), which fails when a module scores under
# 90 % of its non-equivalent mutants; GENRE_MUTATION=0 skips it.
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
.venv/bin/python -m pytest "$@"
if [ "${GENRE_MUTATION:-1}" != 0 ]; then
  PYTHON=.venv/bin/python ./scripts/mutation.sh --changed
fi
