#!/usr/bin/env bash
# The main job on an embedded default, end to end on this machine:
# a real control plane (etcd + kube-apiserver + kube-controller-manager), the real cert-manager
# controller, the Command simulator and command-issuer running under the Helm chart's own
# ServiceAccount. Applies docs/examples (Secret, Issuer, Certificate), waits for the Certificate,
# prints the issued certificate and the op id to grep for, tears everything down, exits 0.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"
# shellcheck source=tests/harness/lib.sh
source "$(dirname "$0")/lib.sh"

BIN=$(bash tests/harness/install.sh | tail -1)
export E2E_TOOLS_BIN=$BIN
log demo "building command-issuer and command-sim"
cargo build --quiet --bins -p command-issuer-actors -p command-sim
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/debug

W=$(mktemp -d "${TMPDIR:-/tmp}/command-issuer-demo.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  bash tests/harness/control-plane.sh down "$W" || true
  if (( rc != 0 )) || [[ ${E2E_KEEP:-0} == 1 ]]; then log demo "logs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

bash tests/harness/control-plane.sh up "$W"
k=("$BIN/kubectl" --kubeconfig "$W/admin.kubeconfig")

log demo "starting the Command simulator"
"$TARGET/command-sim" --config tests/command-sim/config/default.json --listen 127.0.0.1:0 \
  --state-dir "$W/sim" >"$W/command-sim.log" 2>&1 &
PIDS+=($!)
wait_for 30 "command-sim ready.json" test -s "$W/sim/ready.json"
SIM_HOST=$(python3 -c 'import json,sys; print("127.0.0.1:%d" % json.load(open(sys.argv[1]))["port"])' "$W/sim/ready.json")

log demo "installing the Helm chart (RBAC, ServiceAccount; CRDs already applied)"
"${k[@]}" create namespace command-issuer-system >/dev/null
"$BIN/helm" --kubeconfig "$W/admin.kubeconfig" install command-cert-manager-issuer chart \
  --namespace command-issuer-system --set crd.create=false >/dev/null
TOKEN=$("${k[@]}" -n command-issuer-system create token command-cert-manager-issuer --duration 2h)
cp "$W/admin.kubeconfig" "$W/issuer.kubeconfig"
"$BIN/kubectl" --kubeconfig "$W/issuer.kubeconfig" config set-credentials issuer --token "$TOKEN" >/dev/null
"$BIN/kubectl" --kubeconfig "$W/issuer.kubeconfig" config set-context e2e --user issuer >/dev/null

log demo "starting cert-manager v1.11.5 (out of cluster, its approver on)"
"$BIN/cert-manager-controller" --kubeconfig "$W/admin.kubeconfig" --leader-elect=false \
  --cluster-resource-namespace cert-manager --metrics-listen-address 127.0.0.1:0 >"$W/cert-manager.log" 2>&1 &
PIDS+=($!)

log demo "starting command-issuer under ServiceAccount command-issuer-system/command-cert-manager-issuer"
"$TARGET/command-issuer" --kubeconfig "$W/issuer.kubeconfig" --cluster-resource-namespace command-issuer-system \
  --log-format json --metrics-bind-address 0 --health-probe-bind-address 127.0.0.1:0 >"$W/command-issuer.log" 2>&1 &
PIDS+=($!)

log demo "applying docs/examples: command-secret.yaml, CA bundle Secret, issuer.yaml, certificate.yaml"
"${k[@]}" apply -f docs/examples/command-secret.yaml >/dev/null
"${k[@]}" -n command-issuer-system create secret generic command-ca-secret --from-file=ca.crt="$W/sim/tls-ca.pem" >/dev/null
"${k[@]}" apply -f docs/examples/issuer.yaml >/dev/null
# The example names command.example.com; point it at the simulator on loopback.
"${k[@]}" -n default patch issuers.command-issuer.keyfactor.com issuer-sample --type merge \
  -p "{\"spec\":{\"hostname\":\"$SIM_HOST\"}}" >/dev/null
"${k[@]}" -n default wait --for=condition=Ready --timeout=60s issuers.command-issuer.keyfactor.com/issuer-sample >/dev/null
log demo "Issuer issuer-sample is Ready"
"${k[@]}" apply -f docs/examples/certificate.yaml >/dev/null
"${k[@]}" -n default wait --for=condition=Ready --timeout=90s certificates.cert-manager.io/command-certificate >/dev/null

"${k[@]}" -n default get secret command-certificate -o jsonpath='{.data.tls\.crt}' | base64 -d >"$W/tls.crt"
"${k[@]}" -n default get secret command-certificate -o jsonpath='{.data.ca\.crt}' | base64 -d >"$W/ca.crt"
CR=$("${k[@]}" -n default get certificaterequests.cert-manager.io -o jsonpath='{.items[0].metadata.name}')
OP=$(python3 - "$W/command-issuer.log" "default/$CR" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("request") == sys.argv[2] and d.get("op_id") and d.get("message") == "status patched":
        print(d["op_id"]); break
PY
)
echo
echo "== Certificate default/command-certificate is Ready (CertificateRequest default/$CR) =="
openssl x509 -in "$W/tls.crt" -noout -subject -issuer -ext subjectAltName | sed 's/^/  /'
echo "  chain in tls.crt:"
python3 - "$W/tls.crt" <<'PY' | while read -r f; do echo "    $(openssl x509 -in "$f" -noout -subject -issuer | tr '\n' ' ')"; done
import re, sys, tempfile
for i, b in enumerate(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", open(sys.argv[1]).read(), re.S)):
    f = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False); f.write(b); f.close(); print(f.name)
PY
echo "  ca.crt: $(openssl x509 -in "$W/ca.crt" -noout -subject)"
openssl verify -CAfile "$W/ca.crt" -untrusted "$W/tls.crt" "$W/tls.crt" | sed 's/^/  /'
echo "  op id: $OP"
echo "  trace it: grep $OP command-issuer.log   (kept with E2E_KEEP=1 in $W)"
grep -c "$OP" "$W/command-issuer.log" | sed 's/^/  log lines with this op id: /'
