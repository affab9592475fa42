#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS, default 60) with cargo-fuzz on the
# nightly toolchain; installs cargo-fuzz once under ~/.cache/command-issuer-fuzz.
# Findings land in fuzz/artifacts/<target>/; turn each into a regression test before fixing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$HOME/.cache/command-issuer-fuzz
[[ -x $ROOT/bin/cargo-fuzz ]] || cargo install --root "$ROOT" cargo-fuzz --locked
export PATH="$ROOT/bin:$PATH"
SECONDS_EACH=${FUZZ_SECONDS:-60}
passed=0; failed=0
for t in command_response chain_split annotations csr; do
  echo "==== $t (${SECONDS_EACH}s)"
  if cargo +nightly fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
(( failed == 0 ))
