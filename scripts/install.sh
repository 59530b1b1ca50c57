#!/usr/bin/env bash
# Install everything genre needs on a Debian/Ubuntu machine, idempotently:
#   system packages (ffmpeg), a virtualenv in .venv with the package and its dependencies.
#   `--broker` adds Java and Maven for the local Kafka broker (`genre broker start`);
#   `--test` adds those and what the test suite needs (fluidsynth, Prometheus,
#   sonic-annotator's runtime libraries, the musicnn weights the probe tool reads, and
#   Docker's engine, debootstrap and kcat for the compose stack test).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
WITH_BROKER=0
case "${1:-}" in
  --test) WITH_TEST=1; WITH_BROKER=1 ;;
  --broker) WITH_BROKER=1 ;;
  "") ;;
  *) echo "usage: $0 [--broker|--test]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(ffmpeg python3-venv)
if [ "$WITH_BROKER" = 1 ]; then PKGS+=(default-jre-headless maven); fi
if [ "$WITH_TEST" = 1 ]; then
  PKGS+=(fluidsynth fluid-soundfont-gm prometheus flac
         libqt5core5a libqt5network5 libqt5xml5 libsndfile1 libsamplerate0 libsord-0-0 libserd-0-0
         liblrdf0 liboggz2 libfishsound1 libmad0 libid3tag0 libopusfile0
         docker.io debootstrap kcat)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A JDK from another source (e.g. /usr/lib/jvm/temurin) also serves the broker.
if command -v java >/dev/null 2>&1; then missing=("${missing[@]/default-jre-headless}"); fi
if command -v mvn >/dev/null 2>&1; then missing=("${missing[@]/maven}"); fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ "$WITH_TEST" = 1 ]; then
  .venv/bin/pip install -q -e ".[test]"
else
  .venv/bin/pip install -q -e .
fi
# Pre-trained musicnn weights, read by `genre train` (the default architecture) and
# tools/pretrained_probe.py: only the checkpoint files are read, so skip the wheel's 2019
# pins (numpy<1.17, librosa) and never import it. A trained model carries its own copy.
.venv/bin/pip install -q --no-deps "musicnn==0.1.0"
echo "install.sh: ready (.venv/bin/genre)" >&2
