#!/usr/bin/env bash
# Starts or stops a local control plane on loopback for the demo and manual runs:
# etcd + kube-apiserver (RBAC on) + kube-controller-manager, the cert-manager CRDs and ours.
#   control-plane.sh up DIR     start; writes DIR/admin.kubeconfig and DIR/env (PIDs, ports)
#   control-plane.sh down DIR   stop by PID in reverse order, wait for each exit
# Tools come from tests/harness/install.sh (E2E_TOOLS_BIN, default ~/.cache/command-issuer-e2e/bin).
set -euo pipefail
cmd=${1:?usage: control-plane.sh up|down DIR}
W=${2:?usage: control-plane.sh up|down DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${E2E_TOOLS_BIN:-$HOME/.cache/command-issuer-e2e/bin}
CRDS=${CERT_MANAGER_CRDS:-$REPO/../shared/reference/cert-manager.crds.yaml}
# shellcheck source=tests/harness/lib.sh
source "$(dirname "$0")/lib.sh"

down() {
  [[ -f $W/env ]] || return 0
  # shellcheck disable=SC1091
  source "$W/env"
  for pid in ${KCM_PID:-} ${API_PID:-} ${ETCD_PID:-}; do
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$W/env"
  log control-plane "stopped"
}

up() {
  mkdir -p "$W/pki"
  local p=$W/pki t0=$SECONDS
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=e2e-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out apiserver.crt \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n') 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj '/O=system:masters/CN=e2e-admin' 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out admin.crt \
      -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n') 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  local etcd_port peer_port api_port
  read -r etcd_port peer_port api_port < <(free_ports 3)
  "$BIN/etcd" --name e2e --data-dir "$W/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn >"$W/etcd.log" 2>&1 &
  echo "ETCD_PID=$!" >"$W/env"
  wait_for 30 etcd "$BIN/etcdctl" --endpoints "http://127.0.0.1:$etcd_port" endpoint health
  "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$W/apiserver-certs" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --service-account-issuer "https://127.0.0.1:$api_port" \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none --authorization-mode RBAC \
    --disable-admission-plugins ServiceAccount --allow-privileged=true >"$W/kube-apiserver.log" 2>&1 &
  echo "API_PID=$!" >>"$W/env"
  wait_for 120 kube-apiserver curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "https://127.0.0.1:$api_port/readyz"
  local kc=$W/admin.kubeconfig k=("$BIN/kubectl" --kubeconfig "$W/admin.kubeconfig")
  "$BIN/kubectl" config --kubeconfig "$kc" set-cluster e2e --server "https://127.0.0.1:$api_port" --certificate-authority "$p/ca.crt" --embed-certs >/dev/null
  "$BIN/kubectl" config --kubeconfig "$kc" set-credentials e2e-admin --client-certificate "$p/admin.crt" --client-key "$p/admin.key" --embed-certs >/dev/null
  "$BIN/kubectl" config --kubeconfig "$kc" set-context e2e --cluster e2e --user e2e-admin >/dev/null
  "$BIN/kubectl" config --kubeconfig "$kc" use-context e2e >/dev/null
  "$BIN/kube-controller-manager" --kubeconfig "$kc" --controllers namespace,garbagecollector,serviceaccount \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 >"$W/kube-controller-manager.log" 2>&1 &
  echo "KCM_PID=$!" >>"$W/env"
  { echo "API_PORT=$api_port"; echo "ETCD_PORT=$etcd_port"; echo "KUBECONFIG_FILE=$kc"; } >>"$W/env"
  "${k[@]}" apply -f "$CRDS" >/dev/null
  "${k[@]}" apply -f "$REPO/crds/" >/dev/null
  "${k[@]}" wait --for condition=Established --timeout 60s crd/certificaterequests.cert-manager.io \
    crd/certificates.cert-manager.io crd/issuers.command-issuer.keyfactor.com crd/clusterissuers.command-issuer.keyfactor.com >/dev/null
  log control-plane "ready in $((SECONDS - t0))s: $("${k[@]}" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') on 127.0.0.1:$api_port"
}

case $cmd in
  up) up ;;
  down) down ;;
  *) echo "usage: control-plane.sh up|down DIR" >&2; exit 2 ;;
esac
