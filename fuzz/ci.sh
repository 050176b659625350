#!/usr/bin/env bash
# Runs every fuzz target of this crate (the [[bin]]s of fuzz/Cargo.toml) for
# FUZZ_SECONDS (default 30) each, on stable (`-s none`: no sanitizer), on the
# backend TALLY_BACKEND picks (io_uring where it can start, else epoll).
# Each target starts from its committed seeds, corpus/TARGET, but writes what
# it finds to a scratch directory under target/, so the seeds never change.
# Fails if any target fails; a failing input is left in artifacts/TARGET/.
#
#   fuzz/ci.sh                                # 30 s each, default backend
#   FUZZ_SECONDS=600 TALLY_BACKEND=epoll fuzz/ci.sh
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(cargo fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz/ci.sh: no fuzz targets in fuzz/Cargo.toml" >&2
  exit 1
fi

echo "fuzzing ${targets[*]} for ${seconds}s each (TALLY_BACKEND=${TALLY_BACKEND:-default})"
# Build them all first, so that each target's seconds are spent fuzzing.
cargo fuzz build -s none

failed=()
for target in "${targets[@]}"; do
  scratch="target/ci-corpus/$target"
  log="target/ci-logs/$target.log"
  rm -rf "$scratch"
  mkdir -p "$scratch" "$(dirname "$log")"
  started=$SECONDS
  # -timeout: an input that runs over a minute is a hang; report it as one.
  if cargo fuzz run -s none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=256 -timeout=60 >"$log" 2>&1; then
    status=ok
  else
    status="FAILED (exit $?)"
    failed+=("$target")
  fi
  # libFuzzer's last stats line (`#N DONE ...`, or the last `#N ...` before a
  # crash) and its summary (`Done N runs in S second(s)`).
  stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
  printf '%-16s %s in %ss: %s\n' "$target" "$status" "$((SECONDS - started))" \
    "${done_line:-${stats:-no libFuzzer stats}}"
  if [ "$status" != ok ]; then
    echo "--- fuzz/$log: the panic, and the last lines"
    grep -m 3 -A 2 'panicked at' "$log" || true
    echo "..."
    tail -n 15 "$log"
    echo "---"
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz/ci.sh: failing targets: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz/ci.sh: every target ran ${seconds}s without a failure"
