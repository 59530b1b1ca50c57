#!/usr/bin/env bash
# Build every image of the compose stack on a machine that reaches no image registry and
# whose containers do not reach the package index: a Debian base from debootstrap, a
# Python base on it, a wheelhouse built on the host and served to the builds over
# loopback, the three genre images from deploy/Dockerfile, and Kafka (the Maven jars
# `genre broker` uses) and Prometheus (Debian's package) images.
#
#   deploy/local/build-images.sh            # as root (it starts dockerd when none answers)
#
# Environment (defaults in brackets):
#   GENRE_DOCKER_CACHE   rootfs, wheelhouse, Kafka build context, build report
#                        [${XDG_CACHE_HOME:-$HOME/.cache}/genre/docker]
#   GENRE_IMAGE_TAG      tag of the genre images [latest]
#   SONIC_ANNOTATOR_DIR  a prebuilt sonic-annotator + vamp/ to copy into the extractor
#                        image [../shared/sonic-annotator beside the repository, if there;
#                        else it is built from source, which needs the internet]
#   DOCKER_DATA_ROOT     data root of a dockerd this script starts [/var/lib/docker]
#   DOCKER_STORAGE_DRIVER  its storage driver(s), first that starts wins [overlay2 vfs]
#   GENRE_WHEELHOUSE_PORT  loopback port of the wheelhouse server [38765, else any free]
#   FORCE=1              rebuild the base images too
#
# It prints each image's size and build time and writes them to
# $GENRE_DOCKER_CACHE/build-report.json. deploy/local/compose.local.yml runs the result.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

CACHE=${GENRE_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genre/docker}
TAG=${GENRE_IMAGE_TAG:-latest}
DEBIAN_IMAGE=genre-local/debian:bookworm
PYTHON_IMAGE=genre-local/python:3.11-bookworm
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)
KAFKA_IMAGE=genre-local/kafka:$KAFKA_VERSION
PROMETHEUS_IMAGE=genre-local/prometheus:bookworm
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$CACHE"
REPORT=$CACHE/build-report.tsv
: > "$REPORT"

say() { printf '[build-images] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# BuildKit skips the stages a target does not use (the legacy builder builds them all);
# Debian's docker.io client has BuildKit built in, a newer client needs the buildx plugin.
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
fi
export DOCKER_BUILDKIT=1

# ---- the engine -----------------------------------------------------------------------
ensure_engine() {
  if $DOCKER info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || die "no Docker engine answers; start one (or run this as root to let it start dockerd)"
  # overlay2 where the kernel allows it (layers shared, not copied); vfs works on any
  # file system but copies every layer in full (tens of GB for this stack). Without
  # iptables the bridge networks still connect containers to each other, but have no NAT
  # to the outside, so builds run with --network host.
  local driver
  for driver in ${DOCKER_STORAGE_DRIVER:-overlay2 vfs}; do
    say "starting dockerd ($driver storage, no iptables; log: $CACHE/dockerd.log)"
    setsid nohup dockerd --storage-driver "$driver" --iptables=false \
      --data-root "${DOCKER_DATA_ROOT:-/var/lib/docker}" >"$CACHE/dockerd.log" 2>&1 &
    local pid=$!
    for _ in $(seq 60); do
      $DOCKER info >/dev/null 2>&1 && return
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill "$pid" 2>/dev/null || true
    tail -5 "$CACHE/dockerd.log" >&2
  done
  die "dockerd did not start (log: $CACHE/dockerd.log)"
}

have_image() { [ -z "${FORCE:-}" ] && $DOCKER image inspect "$1" >/dev/null 2>&1; }

# build NAME SECONDS: record an image's size and build time
record() {
  local size
  size=$($DOCKER image inspect --format '{{.Size}}' "$1")
  printf '%s\t%s\t%s\n' "$1" "$size" "$2" >> "$REPORT"
  say "$(awk -v i="$1" -v b="$size" -v t="$2" 'BEGIN { printf "%-36s %6.0f MB  %4d s", i, b / 1e6, t }')"
}

timed_build() {  # timed_build IMAGE docker-build-args...
  local image=$1 t0 rc
  shift
  t0=$(date +%s)
  say "building $image"
  if $DOCKER build --network host -t "$image" "$@" >"$CACHE/build-${image//[\/:]/_}.log" 2>&1; then
    record "$image" $(( $(date +%s) - t0 ))
  else
    rc=$?
    tail -40 "$CACHE/build-${image//[\/:]/_}.log" >&2
    die "building $image failed (exit $rc); log: $CACHE/build-${image//[\/:]/_}.log"
  fi
}

# ---- base images ----------------------------------------------------------------------
base_images() {
  if ! have_image "$DEBIAN_IMAGE"; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    local t0 root=$CACHE/rootfs
    t0=$(date +%s)
    say "debootstrap --variant=minbase bookworm (about a minute)"
    rm -rf "$root"
    debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
      >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    # what Debian's official slim images do: no package caches, docs or man pages in
    # the layers, no recommended packages
    cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Install-Recommends "false";
APT
    cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
      "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    tar -C "$root" -c . | $DOCKER import - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$root"
    record "$DEBIAN_IMAGE" $(( $(date +%s) - t0 ))
  fi
  if ! have_image "$PYTHON_IMAGE"; then
    timed_build "$PYTHON_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
      -f deploy/local/python.Dockerfile deploy/local
  fi
}

# ---- wheelhouse, served on loopback during the builds -----------------------------------
WHEEL_PID=
serve_wheelhouse() {
  local wheels=$CACHE/wheelhouse port
  mkdir -p "$wheels"
  say "wheelhouse: pip download into $wheels"
  "$PYTHON" -m pip download --quiet --only-binary=:all: --dest "$wheels" \
    -r deploy/requirements/classifier-cpu.txt "setuptools>=68" wheel >"$CACHE/wheelhouse.log" 2>&1 \
    || { tail -20 "$CACHE/wheelhouse.log" >&2; die "pip download failed"; }
  # a fixed port when free: the URL is a build argument, and a new one each run would
  # invalidate the cached pip layers
  port=$("$PYTHON" - "${GENRE_WHEELHOUSE_PORT:-38765}" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
)
  "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
  WHEEL_PID=$!
  WHEELHOUSE_URL=http://127.0.0.1:$port/
  for _ in $(seq 50); do
    "$PYTHON" -c "import urllib.request; urllib.request.urlopen('$WHEELHOUSE_URL', timeout=1)" 2>/dev/null && return
    sleep 0.2
  done
  die "the wheelhouse server did not start"
}
cleanup() { [ -n "$WHEEL_PID" ] && kill "$WHEEL_PID" 2>/dev/null || true; }
trap cleanup EXIT

# ---- the genre images -----------------------------------------------------------------
genre_images() {
  local sa_source=build sa_dir=${SONIC_ANNOTATOR_DIR:-$REPO/../shared/sonic-annotator}
  rm -rf deploy/local/.stage/sonic-annotator
  if [ -x "$sa_dir/sonic-annotator" ] && [ -d "$sa_dir/vamp" ]; then
    mkdir -p deploy/local/.stage/sonic-annotator
    cp "$sa_dir/sonic-annotator" deploy/local/.stage/sonic-annotator/
    cp -r "$sa_dir/vamp" deploy/local/.stage/sonic-annotator/
    sa_source=prebuilt
  fi
  local args=(--build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE"
              --build-arg WHEELHOUSE_URL="$WHEELHOUSE_URL" --build-arg SONIC_ANNOTATOR_SOURCE=$sa_source
              -f deploy/Dockerfile)
  timed_build "genre-chunker:$TAG" "${args[@]}" --target chunker .
  timed_build "genre-extractor:$TAG" "${args[@]}" --target extractor .
  timed_build "genre-classifier:$TAG-cpu" "${args[@]}" --target classifier --build-arg VARIANT=cpu .
}

# ---- Kafka and Prometheus ---------------------------------------------------------------
kafka_image() {
  local libs ctx=$CACHE/kafka-context
  libs=$("$PYTHON" -c 'from shared.broker import ensure_jars; print(ensure_jars())') \
    || die "could not resolve the Kafka jars (java and mvn needed; see README)"
  rm -rf "$ctx"
  mkdir -p "$ctx/bin"
  cp -r "$libs" "$ctx/libs"
  rm -f "$ctx/libs/.complete"
  cp deploy/kafka/log4j2.yaml "$ctx/"
  cp deploy/local/kafka-run.sh "$ctx/bin/"
  timed_build "$KAFKA_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -f deploy/local/kafka.Dockerfile "$ctx"
}

prometheus_image() {
  timed_build "$PROMETHEUS_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
    -f deploy/local/prometheus.Dockerfile deploy/local
}

T0=$(date +%s)
ensure_engine
base_images
serve_wheelhouse
genre_images
kafka_image
prometheus_image
# the images these builds replaced: their layers would otherwise pile up run after run
$DOCKER image prune -f >/dev/null
say "all images built in $(( $(date +%s) - T0 )) s"
"$PYTHON" - "$REPORT" "$CACHE/build-report.json" <<'EOF'
import json, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines() if line]
report = {image: {"size_mb": round(int(size) / 1e6), "build_s": int(secs)} for image, size, secs in rows}
json.dump(report, open(sys.argv[2], "w"), indent=1)
print(json.dumps(report, indent=1))
EOF
