#!/usr/bin/env bash
# tally's memory checks, run by hand: CI stays on stable Rust, and these
# need a nightly toolchain (AddressSanitizer) or are slow (valgrind).
#
# 1. AddressSanitizer, which on x86_64 Linux includes LeakSanitizer, over
#    the unit and integration tests of tally-reactor and tally, on both
#    backends, when `cargo +nightly` works; otherwise it says it skipped.
# 2. valgrind memcheck over tally-reactor's test binaries, built with
#    stable, on the epoll backend (see below for why not io_uring).
#
# Usage: .ci/sanitize.sh    (JOBS=N for cargo's -j, default 2). About 3
# minutes on 2 cores: ASan 90 s on the default backend (its nightly build
# included) and 45 s on epoll, valgrind 45 s once the stable tests are
# built. Exits non-zero if any run failed or reported anything.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${JOBS:-2}"
TARGET=x86_64-unknown-linux-gnu
failures=()

step() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

step "AddressSanitizer + LeakSanitizer (nightly)"
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "skipped: AddressSanitizer with LeakSanitizer is set up here for x86_64 Linux only"
elif ! cargo +nightly --version >/dev/null 2>&1; then
  echo "skipped: no nightly toolchain (rustup toolchain install nightly)"
else
  cargo +nightly --version
  # --target: RUSTFLAGS then apply to the target only, not to build
  #   scripts and proc macros, which cannot link the sanitizer runtime.
  # No -Zbuild-std: std stays uninstrumented, but ASan intercepts malloc
  #   and free, so leaks and misuse of heap memory anywhere are caught,
  #   and every access in tally's own code is checked.
  # TALLY_SOAK_RSS=ignore: ASan's quarantine keeps freed memory resident,
  #   so the soak's RSS bound means nothing here; its heap bound stays.
  # --skip=setup_under_a_low_memlock_limit (reactor/tests/faults.rs): it
  #   checks that mlock(2) fails under RLIMIT_MEMLOCK 0, and ASan replaces
  #   mlock with a stub that returns 0. The `=` form matters: the
  #   harness=false tests (seccomp, signals, signal_storm) read a bare word
  #   as a test filter, and ignore options.
  asan() {
    TALLY_SOAK_RSS=ignore \
      ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
      RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
      CARGO_TARGET_DIR=target/asan \
      cargo +nightly test -j "$JOBS" --target "$TARGET" -p tally-reactor -p tally \
      --lib --tests --no-fail-fast -- --skip=setup_under_a_low_memlock_limit
  }
  step "ASan: default backend"
  asan || failures+=("ASan, default backend")
  step "ASan: epoll backend (TALLY_BACKEND=epoll)"
  TALLY_BACKEND=epoll asan || failures+=("ASan, epoll backend")
fi

step "valgrind memcheck: tally-reactor's tests on epoll (stable)"
if ! command -v valgrind >/dev/null 2>&1; then
  echo "skipped: valgrind is not installed"
else
  valgrind --version
  # Why epoll only: on io_uring the kernel writes received bytes into the
  # buffers an SQE names, behind memcheck's back, so every byte read looks
  # uninitialised (ops.rs's reads all report); and under valgrind 3.19
  # completions that another thread's action triggers (an eventfd raise, a
  # remote wake-up) are never reaped, so remote.rs, backpressure.rs and the
  # reactor's own wake-read tests time out and timeouts.rs hangs. On epoll
  # every read is a plain syscall that memcheck follows.
  #
  # --fair-sched=yes: valgrind runs one thread at a time, and without a
  # fair lock the four spinning threads of faults.rs's
  # remote_flood_from_four_threads_while_the_reactor_is_dropped starve the
  # thread that drops the reactor for its whole 10 s window.
  #
  # No test is skipped. Children: seccomp.rs forks (the child stays under
  # valgrind); faults.rs's setup_under_a_low_memlock_limit re-executes its
  # binary, and that child runs without valgrind (no --trace-children).
  bins=$(cargo test -j "$JOBS" -p tally-reactor --lib --tests --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' | sort)
  [ -n "$bins" ] || { echo "no test binaries found" >&2; exit 1; }
  logs=target/sanitize/valgrind
  mkdir -p "$logs"
  for bin in $bins; do
    name=$(basename "$bin")
    name=${name%-*}
    echo "--- $name (full output: $logs/$name.log)"
    rc=0
    TALLY_BACKEND=epoll timeout --kill-after=30 900 \
      valgrind --quiet --error-exitcode=1 --leak-check=full --fair-sched=yes \
      --suppressions=.ci/valgrind.supp "$bin" >"$logs/$name.log" 2>&1 || rc=$?
    # memcheck's reports, and the harness's verdict.
    grep -E '^==[0-9]+==|^test result|^[a-z_]+: [0-9]+ passed|FAILED|panicked' "$logs/$name.log" || true
    [ "$rc" -eq 0 ] || failures+=("valgrind: $name (exit $rc)")
  done
fi

step "done"
if [ "${#failures[@]}" -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
  exit 1
fi
echo "all clean"
