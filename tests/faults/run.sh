#!/usr/bin/env bash
# Full fault suite (issue #6 item 3): the scenarios of tests/e2e/tests/faults.rs with
# FAULT_SUITE_N requests each (default here 200; the normal test run uses 24), one test at a
# time, then each scenario's figures (N, seconds, enrollments, faults fired, notes).
#
#   bash tests/faults/run.sh                       # everything, N=200
#   FAULT_SUITE_N=50 bash tests/faults/run.sh      # smaller
#   FAULT_SUITE_ONLY=resets,timeouts bash tests/faults/run.sh command_and_token_endpoint_faults
#
# Extra arguments go to the test binary (a test name filter, --exact, ...). E2E_KEEP=1 keeps the
# control-plane, controller and simulator logs. The full log is in $FAULT_SUITE_LOG.
set -euo pipefail
cd "$(dirname "$0")/../.."

export FAULT_SUITE_N="${FAULT_SUITE_N:-200}"
log="${FAULT_SUITE_LOG:-${TMPDIR:-/tmp}/fault-suite-$$.log}"
bin_dir="$(bash tests/harness/install.sh | tail -n 1)"
export E2E_TOOLS_BIN="$bin_dir" PATH="$bin_dir:$PATH"

cargo build --workspace --bins
cargo test -p command-issuer-e2e --test faults --no-run

echo "fault suite: N=$FAULT_SUITE_N per scenario; log $log"
start=$(date +%s)
status=0
cargo test -p command-issuer-e2e --test faults -- --test-threads=1 --nocapture "$@" >"$log" 2>&1 || status=$?
end=$(date +%s)

# The report tables, the failures and the verdict.
grep -E '^scenario |^[a-z0-9-]+ +[0-9]+ +[0-9.]+ +[0-9]+ |^all scenarios|^test |^Error|^[a-z0-9-]+: |test result' "$log" || true
echo "fault suite finished in $((end - start)) s (exit $status); log $log"
exit "$status"
