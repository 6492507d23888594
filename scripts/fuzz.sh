#!/usr/bin/env bash
# Bounded fuzzing of Kassa's parsers and signature checks: every target in fuzz/ (cargo-fuzz,
# libFuzzer) runs for SECONDS_PER_TARGET seconds. Exits non-zero if any target crashes (a
# panic, a failed property assertion, a sanitizer report), printing the input and the command
# that reproduces it.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 20)
#   KASSA_FUZZ_SANITIZER=none|address      (default none, see below)
#   KASSA_FUZZ_JOBS=<targets run at once>  (default: the number of cores)
#   KASSA_FUZZ_TOOLCHAIN=<rustup toolchain> (default nightly: cargo-fuzz needs nightly flags)
#
# Builds with `-O -a`: the release profile of fuzz/Cargo.toml (optimised where the fuzzer
# spends its time), with debug assertions and overflow checks (Kassa's release profile has
# overflow checks on too, so an overflow here is a panic in production). Everything is built
# in fuzz/target.
#
# Sanitizer: AddressSanitizer builds and runs on this machine, but measured on 2 cores it
# takes the build from ~5 to ~7.5 minutes and cuts executions per second 5-10x; Kassa and the
# parsers it fuzzes are safe Rust, where ASan finds little a panic would not. So the default
# is `none`; `KASSA_FUZZ_SANITIZER=address` for a run that wants it.
#
# The checked-in seeds (fuzz/corpus/<target>/) are only read: libFuzzer writes what it
# discovers into the FIRST corpus directory, a scratch one, so a run never dirties the
# repository. Crash inputs go to fuzz/artifacts/<target>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-20}"
SANITIZER="${KASSA_FUZZ_SANITIZER:-none}"
TOOLCHAIN="${KASSA_FUZZ_TOOLCHAIN:-nightly}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]  (a positive whole number, got '$SECONDS_PER_TARGET')" >&2
  exit 2
fi
export CARGO_TERM_COLOR=never
started=$SECONDS

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
  echo "== installing the $TOOLCHAIN toolchain"
  rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
echo "== $(cargo fuzz --version 2>/dev/null || echo cargo-fuzz), $(rustup run "$TOOLCHAIN" rustc --version)"

# The same flags for build and run, so `run` does not rebuild.
flags=(-O -a --sanitizer "$SANITIZER")
echo "== building fuzz targets (${flags[*]})"
build_started=$SECONDS
cargo "+$TOOLCHAIN" fuzz build "${flags[@]}"
echo "   built in $((SECONDS - build_started)) s"

mapfile -t targets < <(cargo "+$TOOLCHAIN" fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/kassa-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# One target's bounded run; its numbers go to $scratch/<target>.row, its log to .log.
run_target() {
  local target="$1" seeds="fuzz/corpus/$1" log="$scratch/$1.log"
  local run_started=$SECONDS status=0 elapsed execs per_s corpus
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  # -max_total_time bounds the run; -print_final_stats prints the execution count. The
  # scratch directory comes first, so new corpus entries land there; the seeds are read.
  cargo "+$TOOLCHAIN" fuzz run "${flags[@]}" "$target" "$scratch/$target" "$seeds" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  elapsed=$((SECONDS - run_started))
  execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
  execs="${execs:-0}"
  per_s=$((execs / (elapsed > 0 ? elapsed : 1)))
  # What the run found, plus the seeds.
  corpus=$(($(find "$scratch/$target" -type f | wc -l) + $(find "$seeds" -type f 2>/dev/null | wc -l)))
  printf '%-24s %8s %12s %10s %8s %s\n' "$target" "$elapsed" "$execs" "$per_s" "$corpus" \
    "$([ "$status" -eq 0 ] && echo ok || echo "CRASH($status)")" >"$scratch/$target.row"
  echo "$status" >"$scratch/$target.status"
}

# Targets run side by side, one per core (KASSA_FUZZ_JOBS to change): each is one process.
jobs_max="${KASSA_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
echo "== running ${#targets[@]} targets for $SECONDS_PER_TARGET s each, $jobs_max at a time"
runs_started=$SECONDS
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
    wait -n || true
  done
  run_target "$target" &
done
wait

failed=()
printf '%-24s %8s %12s %10s %8s %s\n' target seconds executions execs/s corpus result
for target in "${targets[@]}"; do
  cat "$scratch/$target.row"
  if [ "$(cat "$scratch/$target.status")" != 0 ]; then
    failed+=("$target")
  fi
done
for target in "${failed[@]}"; do
  log="$scratch/$target.log"
  echo "---- $target: what failed, and the end of the libFuzzer log ----"
  grep -E -m 2 -A 4 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" || true
  echo "..."
  grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -n 25
  artifact="$(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -n 1 || true)"
  if [ -n "$artifact" ]; then
    echo "crash input: $artifact"
    echo "reproduce:   cargo +$TOOLCHAIN fuzz run ${flags[*]} $target $artifact"
  fi
  echo "----"
done

echo "== fuzzing done in $((SECONDS - started)) s (build $((runs_started - build_started)) s," \
  "runs $((SECONDS - runs_started)) s)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
