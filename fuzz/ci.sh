#!/usr/bin/env bash
# Fuzzing for CI: install cargo-fuzz if missing, build every target, replay each target's
# committed corpus, then fuzz each target for FUZZ_SECONDS (default 20) on a scratch copy of
# its corpus (fuzz/corpus/ is never modified). Exits non-zero if any replay or run crashes;
# crashing inputs are left in fuzz/artifacts/<target>/ (see fuzz/README.md).
#
# Environment:
#   FUZZ_SECONDS       seconds of fuzzing per target (default 20; 0 = replay only)
#   FUZZ_TARGET_DIR    cargo target directory (default ~/.cache/missive-fuzz-target); kept
#                      apart from the main build's, whose flags differ (ASan, coverage)
#   FUZZ_TARGETS       space-separated targets to run (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/missive-fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR=never
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); this lets stable rustc take them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}"

echo "== cargo fuzz build"
cargo fuzz build --fuzz-dir fuzz

# Bigger inputs for frame_decoder, so two frames near its 64 KiB limit fit in one input.
extra_args() {
  case "$1" in
    frame_decoder) echo "-max_len=139264" ;;
    *) echo "" ;;
  esac
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
failures=()
step() {
  local name="$1"
  shift
  local log="$scratch/$name.log"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed "s/^/$name: /" || true
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "!! $name failed:"
    grep -A 2 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" | head -n 20 || true
    grep -E 'Test unit written to|^SUMMARY|^Error:' "$log" || tail -n 20 "$log"
  fi
}

for t in $targets; do
  echo "== $t: replaying fuzz/corpus/$t ($(find "fuzz/corpus/$t" -type f | wc -l) files)"
  # shellcheck disable=SC2046
  step "$t-replay" cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -runs=0 $(extra_args "$t")
done

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  for t in $targets; do
    echo "== $t: fuzzing for ${FUZZ_SECONDS}s"
    mkdir -p "$scratch/corpus-$t"
    cp -R "fuzz/corpus/$t/." "$scratch/corpus-$t/"
    # shellcheck disable=SC2046
    step "$t-fuzz" cargo fuzz run --fuzz-dir fuzz "$t" "$scratch/corpus-$t" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=30 -print_final_stats=1 $(extra_args "$t")
  done
fi

if [ "$failed" -gt 0 ]; then
  echo "fuzz: failed: ${failures[*]} (crashing inputs in fuzz/artifacts/)"
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
