#!/usr/bin/env bash
# Every test of the project, as CI runs it (`.ci/run` calls this, README names it):
# format, lint, unit tests, CRD drift, chart checks, end-to-end tests on a real control plane
# with the real cert-manager and the Command simulator, then the README demo.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
step() { printf '\n==== %s [%(%H:%M:%S)T]\n' "$*" -1; }

step "install test tools (cached in ~/.cache/command-issuer-e2e)"
E2E_TOOLS_BIN=$(bash tests/harness/install.sh | tail -1)
export E2E_TOOLS_BIN
export PATH="$E2E_TOOLS_BIN:$PATH"

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build binaries"
cargo build --workspace --bins --quiet
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
step "chart checks (helm lint, helm template, object by object)"
bash tests/chart/check.sh | tee -a "$LOG"
step "cargo test (unit, simulator, end-to-end)"
# Each control plane leaves its logs, Events and objects here for the secret-leak sweep.
export E2E_ARTIFACTS_DIR="${CARGO_TARGET_DIR:-$REPO/target}/e2e-artifacts"
rm -rf "$E2E_ARTIFACTS_DIR"
cargo test --workspace --no-fail-fast -- --test-threads "${E2E_TEST_THREADS:-2}" 2>&1 | tee -a "$LOG"
step "secret-leak sweep over every e2e control plane's logs, Events and statuses"
python3 tests/harness/leak_sweep.py --self-test "$E2E_ARTIFACTS_DIR" | tee -a "$LOG"
step "OCI image: daemonless build from the release binary, inspected and run"
bash tests/image/build-oci.sh 2>&1 | tee -a "$LOG"
step "README demo"
bash tests/harness/demo.sh
python3 - "$LOG" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
passed = sum(int(n) for n in re.findall(r"test result: ok\. (\d+) passed", text))
passed += sum(int(n) for n in re.findall(r"^(\d+) passed, 0 failed$", text, re.M))
print(f"ci: {passed + 1} passed, 0 failed")  # + the demo
PY
