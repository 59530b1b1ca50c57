#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (pinned in the test extras), each module
# against only its own fast unit tests:
#   scripts/mutation.sh                  every module below
#   scripts/mutation.sh song_tracker vote
#   scripts/mutation.sh --changed        the modules whose source or tests differ from the merge
#                                        base with origin/main; without origin/main, from the
#                                        previous commit (the whole run takes longer than CI's
#                                        ~10 minutes on 2 cores: see docs/mutation-report.md)
# Each module runs afresh in its own folder .mutation/<module>/ (gitignored; mutmut's cache
# does not notice changed tests), with a pyproject that mutates that file alone; mutmut runs, for
# each mutant, the listed tests that reach the mutated function. Prints per module
# killed/survived/timeout/no-tests and the survivors (`mutmut show NAME` in that folder
# prints a mutant's diff). Score = (killed + timeout) / (mutants - known equivalent survivors);
# the known equivalent mutants, each with its reason, are listed in scripts/mutation-equivalent.txt.
# Exits 1 when a module scores under MUTATION_MIN (default 90) %.
# Environment: PYTHON (default .venv/bin/python), JOBS (default 2), MUTATION_MIN,
# MUTATION_LIST_ONLY (with --changed: print the modules it would run, run nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${JOBS:-2}
MIN=${MUTATION_MIN:-90}
EQUIVALENT=$ROOT/scripts/mutation-equivalent.txt

declare -A SOURCE=(
  [song_tracker]=shared/song_tracker.py
  [vote]=shared/vote.py
  [schemas]=shared/schemas.py
  [blobstore]=shared/blobstore.py
  [audio_ingest]=shared/audio_ingest.py
  [service]=shared/service.py
  [kafka_recv]=shared/kafka_recv.py
  [audio]=shared/audio.py
  [model_inputs]=shared/model_inputs.py
  [worker]=services/classifier/worker.py
  [batching]=services/classifier/batching.py
)
declare -A TESTS=(
  [song_tracker]="tests/unit/test_song_tracker.py"
  [vote]="tests/unit/test_vote.py"
  [schemas]="tests/unit/test_schemas.py tests/unit/test_schemas_pcm.py tests/unit/test_chunk_encoding.py"
  [blobstore]="tests/unit/test_blobstore.py"
  [audio_ingest]="tests/unit/test_audio_ingest.py"
  [service]="tests/unit/test_service.py"
  [kafka_recv]="tests/unit/test_kafka_recv.py"
  [audio]="tests/unit/test_audio.py"
  [model_inputs]="tests/unit/test_model_inputs.py"
  [worker]="tests/unit/test_classifier_worker.py tests/unit/test_classifier_worker_loop.py"
  [batching]="tests/unit/test_classifier_batching.py"
)
ORDER=(song_tracker vote schemas blobstore audio_ingest service kafka_recv audio batching worker model_inputs)

modules=("$@")
if [ "${1:-}" = "--changed" ]; then
  modules=()
  if base=$(git merge-base HEAD origin/main 2>/dev/null); then
    what="since $(git rev-parse --short "$base") (merge base with origin/main)"
  elif base=$(git rev-parse -q --verify HEAD~1); then
    what="since $(git rev-parse --short "$base") (no origin/main: the previous commit)"
  else
    base=""
  fi
  if [ -n "$base" ]; then
    changed=$(git diff --name-only "$base"; git ls-files --others --exclude-standard)
    # Lines added or removed in the list of equivalent mutants, by their module's prefix.
    listed=$(git diff -U0 "$base" -- scripts/mutation-equivalent.txt | grep '^[-+][a-z]' || true)
    for m in "${ORDER[@]}"; do
      prefix=$(sed 's/\.py$//; s#/#.#g' <<<"${SOURCE[$m]}").
      if grep -qF "$prefix" <<<"$listed"; then modules+=("$m"); continue; fi
      for f in "${SOURCE[$m]}" ${TESTS[$m]}; do
        if grep -qxF "$f" <<<"$changed"; then modules+=("$m"); break; fi
      done
    done
    echo "mutation.sh: modules changed $what: ${modules[*]:-none}" >&2
    if [ ${#modules[@]} -eq 0 ]; then exit 0; fi
  else
    echo "mutation.sh: no history to compare with, every module" >&2
    modules=("${ORDER[@]}")
  fi
  if [ -n "${MUTATION_LIST_ONLY:-}" ]; then echo "${modules[*]}"; exit 0; fi
fi
if [ ${#modules[@]} -eq 0 ]; then modules=("${ORDER[@]}"); fi
for m in "${modules[@]}"; do
  if [ -z "${SOURCE[$m]:-}" ]; then echo "unknown module $m (one of: ${ORDER[*]})" >&2; exit 2; fi
done

failed=()
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2
for m in "${modules[@]}"; do
  work=$ROOT/.mutation/$m
  mkdir -p "$work"
  for d in shared services tests models; do ln -sfn "$ROOT/$d" "$work/$d"; done
  {
    cat "$ROOT/pyproject.toml"
    echo
    echo "[tool.mutmut]"
    echo 'source_paths = ["shared/", "services/"]'
    echo "only_mutate = [\"${SOURCE[$m]}\"]"
    echo 'also_copy = ["models/default/"]'
    echo 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow", "-q"]'
    printf 'pytest_add_cli_args_test_selection = ['
    sep=""; for t in ${TESTS[$m]}; do printf '%s"%s"' "$sep" "$t"; sep=", "; done
    echo ']'
    echo 'use_git_change_detection = false'
    # A mutant that makes a test hang (a condition wait that never ends) is a timeout after
    # (test time + 1 s) x 5 of wall clock, not mutmut's default x 15 (minutes per hang).
    echo 'timeout_multiplier = 5.0'
  } > "$work/pyproject.toml.new"
  if ! cmp -s "$work/pyproject.toml.new" "$work/pyproject.toml"; then
    mv "$work/pyproject.toml.new" "$work/pyproject.toml"
  else
    rm "$work/pyproject.toml.new"
  fi
  rm -rf "$work/mutants"
  start=$(date +%s)
  # The mutated copy under mutants/ must be what the tests import: not the checkout.
  (cd "$work" && env -u PYTHONPATH ${MUTMUT_PYTHONPATH:+PYTHONPATH=$MUTMUT_PYTHONPATH} \
     "$PY" -m mutmut run --max-children "$JOBS" > "$work/run.log" 2>&1) || {
    echo "$m: mutmut failed, see $work/run.log" >&2; tail -20 "$work/run.log" >&2; exit 1; }
  secs=$(( $(date +%s) - start ))
  (cd "$work" && env -u PYTHONPATH ${MUTMUT_PYTHONPATH:+PYTHONPATH=$MUTMUT_PYTHONPATH} \
     "$PY" -m mutmut results --all true > "$work/results.txt" 2>/dev/null)
  "$PY" - "$m" "${SOURCE[$m]}" "$secs" "$work/results.txt" "$EQUIVALENT" "$MIN" <<'PYEOF' || failed+=("$m")
import collections, sys
module, source, secs, path, equivalent_path, minimum = sys.argv[1:7]
status = {}
for line in open(path, encoding="utf-8"):
    name, sep, st = line.strip().rpartition(": ")
    if sep:
        status[name] = st
prefix = source.removesuffix(".py").replace("/", ".") + "."
equivalent = set()
for line in open(equivalent_path, encoding="utf-8"):
    name = line.split("#", 1)[0].strip()
    if name.startswith(prefix):
        equivalent.add(name)
count = collections.Counter(status.values())
tested = sum(n for s, n in count.items() if s not in ("skipped", "not checked"))
caught = count["killed"] + count["timeout"]
known = {n for n, st in status.items() if n in equivalent and st not in ("killed", "timeout")}
score = 100.0 * caught / (tested - len(known)) if tested > len(known) else 0.0
raw = 100.0 * caught / tested if tested else 0.0
rest = ", ".join(f"{s} {n}" for s, n in sorted(count.items()) if s not in ("killed", "survived", "timeout"))
print(f"{module} ({source}): {len(status)} mutants, killed {count['killed']}, timeout {count['timeout']}, "
      f"survived {count['survived']} (equivalent {len(known)}){', ' + rest if rest else ''}; "
      f"score {score:.1f} % of the non-equivalent ({raw:.1f} % of all) ({secs} s)")
for name, st in sorted(status.items()):
    if st not in ("killed", "timeout"):
        print(f"    {st}{' (equivalent)' if name in known else ''}: {name}")
for name in sorted(equivalent - set(status)):
    print(f"    listed as equivalent but no longer generated: {name}")
for name in sorted(equivalent & {n for n, st in status.items() if st in ("killed", "timeout")}):
    print(f"    listed as equivalent but killed: {name}")
if score < float(minimum):
    print(f"{module}: score {score:.1f} % is under {minimum} %", file=sys.stderr)
    sys.exit(1)
PYEOF
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "mutation.sh: under ${MIN} %: ${failed[*]}" >&2
  exit 1
fi
