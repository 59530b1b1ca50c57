#!/usr/bin/env bash
# Rebuild the shipped model from nothing: render the MIDI data, bring in the real recordings,
# train, evaluate, cross-validate, and say how far the result is from the committed model.
# Every step is skipped when it finished before with the same command (resume); run --help.
set -euo pipefail

# The settings of the shipped model (they change with it); GENRE_TRAIN_FLAGS and
# GENRE_CROSSVAL_FLAGS replace them (quick runs, tests).
TRAIN_FLAGS="${GENRE_TRAIN_FLAGS:---arch default --seed 0 --members 3}"
EVALUATE_FLAGS="--no-seed"
CROSSVAL_FLAGS="${GENRE_CROSSVAL_FLAGS:---arch default --test-chunks 3 --members 3}"
REAL_REPOSITORY="https://github.com/RohitJacob/MusicAnalysis"
ALLMUSIC_REPOSITORY="https://github.com/Famelgas/MULT_TP2"

usage() {
  cat <<EOF
usage: scripts/make-model.sh [--cache DIR] [--out DIR] [--jobs N] [options]

Rebuilds the shipped model (models/default) and its reports from nothing, into a cache
folder: renders the MIDI songs of ../shared/data with fluidsynth, brings in the real
recordings (the Emotify clips of $REAL_REPOSITORY, and the 4Q clips of blues, country,
folk, hiphop, jazz, electronic and classical of $ALLMUSIC_REPOSITORY, chosen by
models/data/allmusic-4q.csv), splits them by artist,
trains ('genre train', flags: $TRAIN_FLAGS), evaluates ('genre evaluate', report.json and
plots beside the artifact), cross-validates ('genre crossval'), and compares the new
per-source song accuracies with the committed report. A step that finished before with the
same command is skipped, so a second run resumes where the first stopped.

  --cache DIR        work folder (default \${XDG_CACHE_HOME:-\$HOME/.cache}/genre/make-model)
  --out DIR          model artifact folder to write (default models/default)
  --crossval-out DIR cross-validation report folder (default: crossval/ beside --out)
  --jobs N           parallel processes (default: all cores)
  --real-audio DIR   the real clips, <genre>/<n>.mp3 as in data/ of $REAL_REPOSITORY
                     (default: a shallow git clone of it into the cache)
  --real-dir DIR     an already split real data set (train/, test/, split.csv) instead
  --allmusic-audio DIR  the 4Q clips: a folder holding Dataset/Q1..Q4/<song>.mp3 as in
                     $ALLMUSIC_REPOSITORY (default: a shallow sparse clone of it into the cache)
  --allmusic-dir DIR an already split 4Q data set (train/, test/, split.csv) instead
  --no-allmusic      train without the 4Q clips
  --midi-dir DIR     an already split MIDI data set (train/, test/, manifest) instead of rendering
  --shared DIR       the reference data folder (default \$GENRE_REFERENCE_DIR or ../shared)
  --reference FILE   report.json to compare with (default: git HEAD:models/default/report.json)
  --epochs N         maximum training epochs (passed to train and crossval; for quick runs)
  --skip-crossval    do not cross-validate
  -h, --help         this help

Environment: PYTHON (default .venv/bin/python, else python3), GENRE_TRAIN_FLAGS and
GENRE_CROSSVAL_FLAGS (replace the flags of train, default '$TRAIN_FLAGS', and of crossval,
'$CROSSVAL_FLAGS'), GENRE_CACHE_DIR (feature cache, default ~/.cache/genre/features).
Reports name data under the cache as \$GENRE_DATA_ROOT/... (the cache is that root).
Exit status: 0 when every step succeeded (whatever the comparison says), else the failing
step's status.
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/genre/make-model"
OUT="models/default"
CV_OUT=""
JOBS="$(nproc 2>/dev/null || echo 2)"
REAL_AUDIO="" REAL_DIR="" MIDI_DIR="" REFERENCE="" EPOCHS="" SKIP_CV=0
ALLMUSIC_AUDIO="" ALLMUSIC_DIR="" NO_ALLMUSIC=0
SHARED="${GENRE_REFERENCE_DIR:-$REPO/../shared}"

abspath() { [[ "$1" = /* ]] && printf '%s\n' "$1" || printf '%s\n' "$PWD/$1"; }
need() { [[ $# -ge 2 && -n "$2" ]] || { echo "make-model: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) need "$@"; CACHE="$(abspath "$2")"; shift 2 ;;
    --out) need "$@"; OUT="$(abspath "$2")"; shift 2 ;;
    --crossval-out) need "$@"; CV_OUT="$(abspath "$2")"; shift 2 ;;
    --jobs) need "$@"; JOBS="$2"; shift 2 ;;
    --real-audio) need "$@"; REAL_AUDIO="$(abspath "$2")"; shift 2 ;;
    --allmusic-audio) need "$@"; ALLMUSIC_AUDIO="$(abspath "$2")"; shift 2 ;;
    --allmusic-dir) need "$@"; ALLMUSIC_DIR="$(abspath "$2")"; shift 2 ;;
    --no-allmusic) NO_ALLMUSIC=1; shift ;;
    --real-dir) need "$@"; REAL_DIR="$(abspath "$2")"; shift 2 ;;
    --midi-dir) need "$@"; MIDI_DIR="$(abspath "$2")"; shift 2 ;;
    --shared) need "$@"; SHARED="$(abspath "$2")"; shift 2 ;;
    --reference) need "$@"; REFERENCE="$(abspath "$2")"; shift 2 ;;
    --epochs) need "$@"; EPOCHS="$2"; shift 2 ;;
    --skip-crossval) SKIP_CV=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "make-model: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$REPO"
OUT="$(abspath "$OUT")"
CV_OUT="${CV_OUT:-$(dirname "$OUT")/crossval}"
PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
export GENRE_DATA_ROOT="$CACHE"
mkdir -p "$CACHE/done"

START=$SECONDS
log() { printf '[make-model %02d:%02d] %s\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*"; }
genre() { "$PYTHON" -m shared.cli "$@"; }

# step NAME OUTPUT COMMAND...: run COMMAND unless NAME finished before with the same command
# and OUTPUT still exists; once one step runs, every later one runs too (its inputs changed).
# A failing command ends the script (set -e) with its status; the EXIT trap names the step.
RAN=0 CURRENT=""
trap 'status=$?; if [[ $status != 0 && -n "$CURRENT" ]]; then log "$CURRENT: FAILED (exit $status)"; fi' EXIT
step() {
  local name="$1" output="$2"; shift 2
  local mark="$CACHE/done/$name" key="$*" t=$SECONDS
  if [[ $RAN == 0 && -e "$output" && -f "$mark" && "$(cat "$mark")" == "$key" ]]; then
    log "$name: done before, skipped ($output)"
    return 0
  fi
  RAN=1 CURRENT="$name"
  rm -f "$mark"
  log "$name: started"
  "$@"
  printf '%s' "$key" > "$mark"
  CURRENT=""
  log "$name: done in $((SECONDS - t)) s"
}

render() {  # render OUT_DIR SPLIT SECONDS: fluidsynth renders of one side, with the manifest beside them
  command -v fluidsynth >/dev/null || {
    echo "make-model: fluidsynth is missing: apt-get install fluidsynth fluid-soundfont-gm, or give --midi-dir" >&2
    return 3
  }
  "$PYTHON" "$SHARED/data/render.py" "$1" --split "$2" --seconds "$3" --jobs "$JOBS"
  ln -sfn "$SHARED/data/manifest.csv" "$1/manifest.csv"
}

crossval_set() {  # the 300-s train renders and the 90-s test renders as one data set
  mkdir -p "$1"
  ln -sfn "$CACHE/render/long/train" "$1/train"
  ln -sfn "$CACHE/render/r90/test" "$1/test"
  ln -sfn "$SHARED/data/manifest.csv" "$1/manifest.csv"
}

real_audio() {  # $CACHE/emotify/data: the folder given, or data/ of a shallow clone
  local src="$REAL_AUDIO"
  if [[ -z "$src" ]]; then
    src="$CACHE/MusicAnalysis/data"
    if [[ ! -d "$src" ]]; then
      rm -rf "$CACHE/MusicAnalysis"
      git clone --depth 1 "$REAL_REPOSITORY" "$CACHE/MusicAnalysis" || {
        cat >&2 <<EOF
make-model: could not clone $REAL_REPOSITORY.
Get its data/ folder another way (e.g. the repository's zip from GitHub, unpacked on any
machine and copied here) and run again with --real-audio DIR, DIR being that data/
folder (it holds classical/, electronic/, pop/ and rock/ with <n>.mp3 in each).
EOF
        return 3
      }
    fi
  fi
  [[ -d "$src/classical" ]] || { echo "make-model: $src has no classical/ folder: not the clips' data/" >&2; return 3; }
  mkdir -p "$CACHE/emotify"
  ln -sfn "$src" "$CACHE/emotify/data"
}

split_by_manifest() {  # split_by_manifest NAME MANIFEST: $CACHE/NAME into $CACHE/datasets/NAME by the manifest
  rm -rf "$CACHE/datasets/$1"
  genre dataset split "$CACHE/$1" "$CACHE/datasets/$1" --manifest "$2" --group-by artist
}

# real_source VAR GIVEN NAME AUDIO FETCH MANIFEST: VAR becomes GIVEN (a data set split before) when
# given, else $CACHE/datasets/NAME, split by MANIFEST from the clips FETCH brings to AUDIO.
real_source() {
  local -n dataset="$1"
  if [[ -n "$2" ]]; then dataset="$2"; return 0; fi
  step "$3-audio" "$4" "$5"
  step "$3-split" "$CACHE/datasets/$3/split.csv" split_by_manifest "$3" "$6"
  dataset="$CACHE/datasets/$3"
}

allmusic_audio() {  # $CACHE/allmusic/Dataset: the folder given, or Dataset/ of a sparse shallow clone
  local src="$ALLMUSIC_AUDIO"
  if [[ -z "$src" ]]; then
    src="$CACHE/MULT_TP2"
    if [[ ! -d "$src/Dataset/Q1" ]]; then
      rm -rf "$src"
      { git clone --depth 1 --filter=blob:none --sparse "$ALLMUSIC_REPOSITORY" "$src" \
          && git -C "$src" sparse-checkout set Dataset/Q1 Dataset/Q2 Dataset/Q3 Dataset/Q4; } || {
        cat >&2 <<EOF
make-model: could not clone $ALLMUSIC_REPOSITORY.
Get its Dataset/Q1..Q4 folders another way and run again with --allmusic-audio DIR, DIR
holding Dataset/Q1..Q4/<song>.mp3; or leave these clips out with --no-allmusic.
EOF
        return 3
      }
    fi
  fi
  [[ -d "$src/Dataset/Q1" ]] || { echo "make-model: $src has no Dataset/Q1 folder: not the 4Q clips" >&2; return 3; }
  mkdir -p "$CACHE/allmusic"
  ln -sfn "$src/Dataset" "$CACHE/allmusic/Dataset"
}

read -r -a train_flags <<< "$TRAIN_FLAGS"
read -r -a evaluate_flags <<< "$EVALUATE_FLAGS"
read -r -a crossval_flags <<< "$CROSSVAL_FLAGS"
if [[ -n "$EPOCHS" ]]; then train_flags+=(--epochs "$EPOCHS"); crossval_flags+=(--epochs "$EPOCHS"); fi
log "cache $CACHE, model $OUT, $JOBS jobs, training flags: ${train_flags[*]}"

# a. the MIDI songs
if [[ -n "$MIDI_DIR" ]]; then
  MIDI_TRAIN="$MIDI_DIR" MIDI_TEST="$MIDI_DIR/test" MIDI_CV="$MIDI_DIR"
else
  step render-train "$CACHE/render/long/manifest.csv" render "$CACHE/render/long" train 300
  step render-test "$CACHE/render/r90/manifest.csv" render "$CACHE/render/r90" test 90
  step render-crossval "$CACHE/render/long300/manifest.csv" crossval_set "$CACHE/render/long300"
  MIDI_TRAIN="$CACHE/render/long" MIDI_TEST="$CACHE/render/r90/test" MIDI_CV="$CACHE/render/long300"
fi

# b. the real recordings
real_source REAL "$REAL_DIR" emotify "$CACHE/emotify/data" real_audio "$SHARED/data/real/emotify.csv"

# b2. real recordings of the genres the renders alone teach (blues, country, folk, hiphop, jazz)
ALLMUSIC=() ALLMUSIC_TEST=() ALLMUSIC_TRAIN=()
if [[ $NO_ALLMUSIC == 0 ]]; then
  real_source AM "$ALLMUSIC_DIR" allmusic "$CACHE/allmusic/Dataset" allmusic_audio "$REPO/models/data/allmusic-4q.csv"
  ALLMUSIC=("allmusic=$AM") ALLMUSIC_TEST=("allmusic=$AM/test") ALLMUSIC_TRAIN=(--train "$AM/train")
fi

# c. train, d. evaluate and cross-validate
step train "$OUT/model.keras" genre train "real=$REAL" "midi=$MIDI_TRAIN" "${ALLMUSIC[@]}" --out "$OUT" --jobs "$JOBS" "${train_flags[@]}"
step evaluate "$OUT/report.json" genre evaluate "$OUT" "real=$REAL/test" "midi=$MIDI_TEST" "${ALLMUSIC_TEST[@]}" \
  --train "$REAL/train" --train "$MIDI_TRAIN/train" "${ALLMUSIC_TRAIN[@]}" --out "$OUT" --jobs "$JOBS" "${evaluate_flags[@]}"
if [[ $SKIP_CV == 0 ]]; then
  step crossval "$CV_OUT/crossval.json" genre crossval "real=$REAL" "midi=$MIDI_CV" "${ALLMUSIC[@]}" --out "$CV_OUT" --jobs "$JOBS" \
    "${crossval_flags[@]}"
fi

# e. how far from the committed model: each source's song accuracy against seed noise
if [[ -z "$REFERENCE" ]]; then
  REFERENCE="$CACHE/reference-report.json"
  git show HEAD:models/default/report.json > "$REFERENCE" 2>/dev/null || rm -f "$REFERENCE"
fi
log "comparison with ${REFERENCE:-nothing}"
"$PYTHON" - "$REFERENCE" "$OUT/report.json" <<'EOF' || log "comparison: could not compare (see above)"
"""Per-source song accuracy, committed vs new (songs: committed/new): within 2 binomial
standard errors of the committed accuracy on its test songs, the spread a new seed gives?"""
import json, math, sys
try:
    ref = json.load(open(sys.argv[1]))
except OSError as exc:
    print(f"comparison: no reference report ({exc}); nothing to compare with"); sys.exit(0)
new = json.load(open(sys.argv[2]))
def rows(r):
    return {"pooled": r, **r.get("sources", {})}
ref_rows, new_rows = rows(ref), rows(new)
print(f"comparison: {'source':<10}{'songs':>10}{'committed':>11}{'new':>8}{'diff':>8}{'2 SE':>7}  within seed noise")
for name, r in ref_rows.items():
    n = new_rows.get(name)
    if n is None:
        print(f"comparison: {name:<10} not in the new report"); continue
    p, songs = r["song_accuracy"], r["songs"]
    tol = 2 * math.sqrt(max(p * (1 - p), 1e-9) / max(songs, 1))
    diff, count = n["song_accuracy"] - p, f"{songs}/{n['songs']}"
    print(f"comparison: {name:<10}{count:>10}{p:>11.3f}{n['song_accuracy']:>8.3f}{diff:>+8.3f}{tol:>7.3f}  "
          f"{'yes' if abs(diff) <= tol else 'NO'}")
EOF
log "finished: model and report in $OUT$([[ $SKIP_CV == 0 ]] && echo ", cross-validation in $CV_OUT")"
