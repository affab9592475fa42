#!/usr/bin/env bash
# Load benchmark of command-issuer (issue #6 item 1): builds the release controller, simulator
# and driver, then runs the matrix on fresh local control planes and writes docs/benchmarks.md.
#   bash bench/run.sh            full matrix: N=100,1000,5000 × L=0,500 ms, references (a) (b) (b')
#   bash bench/run.sh --quick    N=100 only (report in target/bench/benchmarks-quick.md)
#   bash bench/run.sh --plan     print the runs and their estimated duration, run nothing
#   bash bench/run.sh --issuers  only the many-issuers scenario (1000 Issuers, one per namespace,
#                                30 s health checks; ≈ 3 min), replaces its own section of
#                                docs/benchmarks.md (the matrix run keeps that section)
# Other flags: --sizes 100,1000 --latencies 0,500 --concurrency 32 --window-secs 20
#   --idle-secs 10 --runs ours,a,b,b2 --out FILE; --issuer-count 1000 --issuers-window-secs 90
#   (see `--help`).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
E2E_TOOLS_BIN=$(bash tests/harness/install.sh | tail -1)
export E2E_TOOLS_BIN PATH="$E2E_TOOLS_BIN:$PATH"
cargo build --release --quiet -p command-issuer-actors -p command-sim -p command-issuer-bench
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
export COMMAND_ISSUER_BIN=$TARGET/release/command-issuer COMMAND_SIM_BIN=$TARGET/release/command-sim
# Each control plane dumps its objects for the e2e secret-leak sweep on the way out; keep the
# benchmark's dumps out of the suite's evidence and remove them afterwards.
# Work dirs (control planes, simulator state) in a private dir too, out of reach of anything
# that sweeps the e2e suite's leftovers in /tmp while a long run is going.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-work.XXXXXX")
export E2E_ARTIFACTS_DIR=$WORK/artifacts E2E_TMPDIR=$WORK/tmp
mkdir -p "$E2E_ARTIFACTS_DIR" "$E2E_TMPDIR"
# BENCH_KEEP=1 keeps them (logs of a failed run).
trap '[[ ${BENCH_KEEP:-0} == 1 ]] && echo "[bench] kept $WORK" >&2 || rm -rf "$WORK"' EXIT
"$TARGET/release/command-issuer-bench" "$@"
