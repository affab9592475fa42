#!/usr/bin/env bash
# Renders the Helm chart in chart/ and asserts the rendered objects, object by object.
# Needs helm (PATH, or ~/.cache/command-issuer-e2e/bin) and python3 with PyYAML.
# Prints "N passed, M failed" last; exits non-zero on any failure.
# CHART_SERVER_DRY_RUN=1 also starts a throwaway apiserver (tests/harness/control-plane.sh, needs
# the e2e tools) and applies several renders with `kubectl apply --dry-run=server` (ServiceMonitors
# dropped: the test apiserver has no Prometheus Operator CRDs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART=$ROOT/chart
export PATH="$PATH:${E2E_CACHE:-$HOME/.cache/command-issuer-e2e}/bin"
command -v helm >/dev/null || { echo "helm not found" >&2; exit 2; }
python3 -c 'import yaml' 2>/dev/null || { echo "python3 with PyYAML required" >&2; exit 2; }

OUT=$(mktemp -d)
CP=""
cleanup() {
  [[ -z $CP ]] || bash "$ROOT/tests/harness/control-plane.sh" down "$CP" >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
NS=command-issuer-system

lint_failed=0
for args in "" "-f $CHART/ci/all-values.yaml"; do
  # shellcheck disable=SC2086
  if ! helm lint --strict "$CHART" $args >"$OUT/lint.log" 2>&1; then
    echo "FAIL helm lint --strict $args"; cat "$OUT/lint.log"; lint_failed=$((lint_failed + 1))
  fi
done

render() {  # render NAME RELEASE [helm args...]
  local name=$1 release=$2; shift 2
  if ! helm template "$release" "$CHART" --namespace "$NS" "$@" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    echo "FAIL helm template $name"; cat "$OUT/$name.err"; echo "render-failed" >"$OUT/$name.yaml"
  fi
}

render default         x
render all             x -f "$CHART/ci/all-values.yaml"
render fullname        x --set fullnameOverride=acme-issuer
render named-release   command-cert-manager-issuer
render second          y
render crd-annotations x --set-string 'crd.annotations.helm\.sh/resource-policy=keep'
render no-create-sa    x --set serviceAccount.create=false
render env-map         x --set env.HTTPS_PROXY=http://proxy:3128
render secrets-only    x --set secretConfig.useClusterRoleForSecretAccess=true
render no-affinity     x --set affinity=null
render upstream-style  x --set image.tag=2.6.0 \
  --set-string 'podLabels.azure\.workload\.identity/use=true' \
  --set-string 'serviceAccount.labels.azure\.workload\.identity/use=true' \
  --set-string 'serviceAccount.annotations.azure\.workload\.identity/client-id=abc'
render sm-only         x --set metrics.serviceMonitor.enabled=true
render svc-only        x --set metrics.service.enabled=true --set metrics.service.port=9100
render go-metrics      x --set metrics.secure=true --set secureMetrics.enabled=true
render np-only         x --set networkPolicy.enabled=true
render np-metrics      x --set networkPolicy.enabled=true --set metrics.service.enabled=true
render pdb-default     x --set podDisruptionBudget.enabled=true --set replicaCount=2
render pdb-percent     x --set podDisruptionBudget.enabled=true --set-string podDisruptionBudget.maxUnavailable=50%
render pdb-zero        x --set podDisruptionBudget.enabled=true --set podDisruptionBudget.maxUnavailable=0
# Must fail: a PodDisruptionBudget with neither minAvailable nor maxUnavailable.
if helm template x "$CHART" --namespace "$NS" --set podDisruptionBudget.enabled=true \
     --set-string podDisruptionBudget.minAvailable= >"$OUT/pdb-empty.yaml" 2>"$OUT/pdb-empty.err"; then
  echo "rendered" >"$OUT/pdb-empty.status"
else
  echo "failed" >"$OUT/pdb-empty.status"
fi

# Optional: server-side dry-run of renders against a throwaway apiserver. One line per render in
# $OUT/dry-run.results: "<name> ok" or "<name> failed".
: >"$OUT/dry-run.results"
if [[ ${CHART_SERVER_DRY_RUN:-} == 1 ]]; then
  CP=$OUT/control-plane
  if bash "$ROOT/tests/harness/control-plane.sh" up "$CP" >"$OUT/control-plane.log" 2>&1; then
    export KUBECONFIG=$CP/admin.kubeconfig
    kubectl create namespace "$NS" >/dev/null
    for name in default all sm-only np-only np-metrics pdb-default pdb-percent pdb-zero; do
      if python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] != "ServiceMonitor"]
print(yaml.safe_dump_all(docs))' "$OUT/$name.yaml" | kubectl apply --dry-run=server -f - >"$OUT/dry-run-$name.log" 2>&1; then
        echo "$name ok" >>"$OUT/dry-run.results"
      else
        echo "$name failed" >>"$OUT/dry-run.results"; echo "FAIL kubectl apply --dry-run=server ($name)"; cat "$OUT/dry-run-$name.log"
      fi
    done
  else
    echo "control-plane-up failed" >>"$OUT/dry-run.results"; echo "FAIL control-plane.sh up"; tail -20 "$OUT/control-plane.log"
  fi
fi

LINT_FAILED=$lint_failed OUT=$OUT NS=$NS python3 - <<'EOF'
import os, sys, yaml

OUT, NS = os.environ["OUT"], os.environ["NS"]
passed, failed = 2 - int(os.environ["LINT_FAILED"]), int(os.environ["LINT_FAILED"])

def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}")

def load(name):
    text = open(f"{OUT}/{name}.yaml").read()
    if text.strip() == "render-failed":
        check(False, f"{name}: renders")
        return {}
    check(True, f"{name}: renders")
    objs = {}
    for d in yaml.safe_load_all(text):
        if not d:
            continue
        key = (d["kind"], d["metadata"]["name"])
        check(key not in objs, f"{name}: {key} rendered once")
        objs[key] = d
    return objs

def norm_rules(rules):
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    for rn in r.get("resourceNames", [None]):
                        out.add((g, res, v, rn))
    return out

def rules(*specs):
    out = set()
    for groups, resources, verbs, *names in specs:
        for g in groups:
            for res in resources:
                for v in verbs:
                    for rn in (names[0] if names else [None]):
                        out.add((g, res, v, rn))
    return out

MANAGER = rules(
    (["cert-manager.io"], ["certificaterequests"], ["get", "list", "watch", "patch"]),
    (["cert-manager.io"], ["certificaterequests/status"], ["patch"]),
    (["command-issuer.keyfactor.com"], ["issuers", "clusterissuers"], ["get", "list", "watch"]),
    (["command-issuer.keyfactor.com"], ["issuers/status", "clusterissuers/status"], ["patch"]),
    (["events.k8s.io"], ["events"], ["create", "patch"]),
)
LEASES = rules((["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "patch", "delete"]))
SECRETS = rules(([""], ["secrets"], ["get", "list", "watch"]))
CONFIGMAPS = rules(([""], ["configmaps"], ["get", "list", "watch"]))
APPROVER = rules((["cert-manager.io"], ["signers"], ["approve"],
                  ["issuers.command-issuer.keyfactor.com/*", "clusterissuers.command-issuer.keyfactor.com/*"]))
CRDS = {("CustomResourceDefinition", "issuers.command-issuer.keyfactor.com"),
        ("CustomResourceDefinition", "clusterissuers.command-issuer.keyfactor.com")}
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

def expected_objects(full, sa=None, secrets_cluster=False, cms_cluster=False, approver=True, crds=True,
                     service=False, service_monitor=False, network_policy=False, pdb=False):
    exp = {("Deployment", full),
           ("ClusterRole", f"{full}-manager-role"), ("ClusterRoleBinding", f"{full}-manager-rolebinding"),
           ("Role", f"{full}-leader-election-role"), ("RoleBinding", f"{full}-leader-election-rolebinding")}
    if sa:
        exp.add(("ServiceAccount", sa))
    for cluster, what in ((secrets_cluster, "secret"), (cms_cluster, "configmap")):
        exp.add(("ClusterRole" if cluster else "Role", f"{full}-{what}-reader-role"))
        exp.add(("ClusterRoleBinding" if cluster else "RoleBinding", f"{full}-{what}-reader-rolebinding"))
    if approver:
        exp |= {("ClusterRole", f"{full}-approver"), ("ClusterRoleBinding", f"{full}-approver")}
    if crds:
        exp |= CRDS
    if service or service_monitor:
        exp.add(("Service", f"{full}-metrics"))
    if service_monitor:
        exp.add(("ServiceMonitor", full))
    if network_policy:
        exp.add(("NetworkPolicy", full))
    if pdb:
        exp.add(("PodDisruptionBudget", full))
    return exp

def check_objects(name, objs, exp, namespaces=None):
    got = set(objs)
    check(got == exp, f"{name}: object set; missing {sorted(exp - got)}, unexpected {sorted(got - exp)}")
    for (kind, n), o in objs.items():
        ns = o["metadata"].get("namespace")
        if kind in CLUSTER_KINDS:
            check(ns is None, f"{name}: {kind}/{n} is cluster-scoped (no namespace)")
        else:
            want = (namespaces or {}).get(kind, NS)
            check(ns == want, f"{name}: {kind}/{n} in namespace {want} (got {ns})")

def check_rbac(name, objs, full, sa_name, secrets_cluster=False, cms_cluster=False, approver=True,
               approver_sa="cert-manager", approver_ns="cert-manager"):
    subject = [{"kind": "ServiceAccount", "name": sa_name, "namespace": NS}]
    def role(kind, n, want):
        o = objs.get((kind, n))
        check(o is not None, f"{name}: {kind}/{n} present")
        if o:
            got = norm_rules(o.get("rules", []))
            check(got == want, f"{name}: {kind}/{n} rules exact; missing {sorted(want - got, key=str)}, extra {sorted(got - want, key=str)}")
    def binding(kind, n, role_kind, role_name, subj=subject):
        o = objs.get((kind, n))
        check(o is not None, f"{name}: {kind}/{n} present")
        if o:
            check(o["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
                  f"{name}: {kind}/{n} roleRef -> {role_kind}/{role_name} (got {o['roleRef']})")
            check(o.get("subjects") == subj, f"{name}: {kind}/{n} subjects {subj} (got {o.get('subjects')})")
    role("ClusterRole", f"{full}-manager-role", MANAGER)
    binding("ClusterRoleBinding", f"{full}-manager-rolebinding", "ClusterRole", f"{full}-manager-role")
    role("Role", f"{full}-leader-election-role", LEASES)
    binding("RoleBinding", f"{full}-leader-election-rolebinding", "Role", f"{full}-leader-election-role")
    for cluster, what, want in ((secrets_cluster, "secret", SECRETS), (cms_cluster, "configmap", CONFIGMAPS)):
        rk = "ClusterRole" if cluster else "Role"
        bk = "ClusterRoleBinding" if cluster else "RoleBinding"
        role(rk, f"{full}-{what}-reader-role", want)
        binding(bk, f"{full}-{what}-reader-rolebinding", rk, f"{full}-{what}-reader-role")
    if approver:
        role("ClusterRole", f"{full}-approver", APPROVER)
        binding("ClusterRoleBinding", f"{full}-approver", "ClusterRole", f"{full}-approver",
                [{"kind": "ServiceAccount", "name": approver_sa, "namespace": approver_ns}])
    # Least privilege across every role: no update except on leases, no finalizers, no wildcards,
    # nothing beyond what is listed above.
    for (kind, n), o in objs.items():
        if kind not in ("Role", "ClusterRole"):
            continue
        for g, res, v, rn in norm_rules(o.get("rules", [])):
            check(v != "update" or res == "leases", f"{name}: {kind}/{n} no update on {g}/{res}")
            check(not res.endswith("/finalizers"), f"{name}: {kind}/{n} no finalizers ({res})")
            check("*" not in (g, res, v), f"{name}: {kind}/{n} no wildcard ({g}, {res}, {v})")

DEFAULT_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64", "ppc64le", "s390x"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}
def base_args(metrics="127.0.0.1:8080"):
    return ["--health-probe-bind-address=:8081", f"--metrics-bind-address={metrics}", "--leader-elect"]
BASE_ARGS = base_args()
HEALTHZ_PORT = {"name": "healthz", "containerPort": 8081, "protocol": "TCP"}
OPTIONAL_KINDS = ("Service", "ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget")
DEFAULT_EGRESS = [
    {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
    {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]},
]
PROBE_RULE = {"ports": [{"port": 8081, "protocol": "TCP"}]}

def projected_volume(mode=0o444, expiration=3607):
    return {"name": "serviceaccount-token", "projected": {"defaultMode": mode, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": expiration}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}
TOKEN_MOUNT = {"name": "serviceaccount-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}

def deployment(name, objs, full):
    d = objs.get(("Deployment", full))
    check(d is not None, f"{name}: Deployment/{full} present")
    if not d:
        return None, None, None
    pod = d["spec"]["template"]["spec"]
    cs = pod["containers"]
    check(len(cs) == 1, f"{name}: one container")
    return d, pod, cs[0]

def selector(d):
    return d["spec"]["selector"]["matchLabels"] if d else None

def check_metrics_exposed(name, objs, full, port, sm=True, sm_ns=NS, interval="30s", timeout="10s",
                          sm_labels=None, svc_annotations=None):
    """The metrics listener on :port, the container port, the Service and (sm) the ServiceMonitor."""
    d, pod, c = deployment(name, objs, full)
    sel = selector(d)
    if d:
        check(f"--metrics-bind-address=:{port}" in c["args"] and
              not any(a.startswith("--metrics-bind-address=127.") for a in c["args"]),
              f"{name}: --metrics-bind-address=:{port} (got {c['args']})")
        check(c.get("ports") == [HEALTHZ_PORT, {"name": "metrics", "containerPort": port, "protocol": "TCP"}],
              f"{name}: container ports healthz + metrics:{port} (got {c.get('ports')})")
    svc = objs.get(("Service", f"{full}-metrics"))
    check(svc is not None, f"{name}: Service/{full}-metrics present")
    if svc and d:
        spec = svc["spec"]
        check(svc["apiVersion"] == "v1", f"{name}: Service apiVersion v1")
        check(spec.get("type") == "ClusterIP", f"{name}: Service type ClusterIP")
        check(spec.get("selector") == sel, f"{name}: Service selector == Deployment selector ({spec.get('selector')} vs {sel})")
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        check(all(pod_labels.get(k) == v for k, v in spec.get("selector", {}).items()), f"{name}: Service selects the pods")
        check(spec.get("ports") == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}],
              f"{name}: Service port metrics:{port} -> targetPort metrics (got {spec.get('ports')})")
        check(svc["metadata"].get("annotations") == svc_annotations, f"{name}: Service annotations {svc_annotations}")
    smo = objs.get(("ServiceMonitor", full))
    if not sm:
        check(smo is None, f"{name}: no ServiceMonitor")
        return
    check(smo is not None, f"{name}: ServiceMonitor/{full} present")
    if smo and svc:
        check(smo["apiVersion"] == "monitoring.coreos.com/v1", f"{name}: ServiceMonitor apiVersion (got {smo['apiVersion']})")
        check(smo["metadata"]["namespace"] == sm_ns, f"{name}: ServiceMonitor namespace {sm_ns}")
        spec = smo["spec"]
        ml = spec["selector"]["matchLabels"]
        svc_labels = svc["metadata"]["labels"]
        check(ml and all(svc_labels.get(k) == v for k, v in ml.items()),
              f"{name}: ServiceMonitor selector {ml} matches Service labels {svc_labels}")
        check(ml.get("app.kubernetes.io/component") == "metrics", f"{name}: ServiceMonitor selects the metrics component")
        check(spec.get("namespaceSelector") == {"matchNames": [svc["metadata"]["namespace"]]},
              f"{name}: ServiceMonitor namespaceSelector -> the Service's namespace (got {spec.get('namespaceSelector')})")
        check(spec.get("endpoints") == [{"port": "metrics", "path": "/metrics", "scheme": "http",
                                         "interval": interval, "scrapeTimeout": timeout}],
              f"{name}: ServiceMonitor endpoint port/path/interval/scrapeTimeout (got {spec.get('endpoints')})")
        for k, v in (sm_labels or {}).items():
            check(smo["metadata"]["labels"].get(k) == v, f"{name}: ServiceMonitor label {k}={v}")

def check_metrics_private(name, objs, full):
    """Default: loopback listener, no metrics port, no Service/ServiceMonitor."""
    d, pod, c = deployment(name, objs, full)
    if d:
        check("--metrics-bind-address=127.0.0.1:8080" in c["args"], f"{name}: --metrics-bind-address=127.0.0.1:8080")
        check(c.get("ports") == [HEALTHZ_PORT], f"{name}: only the healthz container port (got {c.get('ports')})")
    check(not any(k[0] in ("Service", "ServiceMonitor") for k in objs), f"{name}: no Service/ServiceMonitor")

def check_network_policy(name, objs, full, metrics_rule=None, egress=None):
    """metrics_rule: None (no rule), {"port": p} (from anywhere) or {"port": p, "from": peers}."""
    d, pod, c = deployment(name, objs, full)
    np = objs.get(("NetworkPolicy", full))
    check(np is not None, f"{name}: NetworkPolicy/{full} present")
    if not (np and d):
        return
    spec = np["spec"]
    check(np["apiVersion"] == "networking.k8s.io/v1", f"{name}: NetworkPolicy apiVersion")
    check(spec["podSelector"] == {"matchLabels": selector(d)},
          f"{name}: NetworkPolicy podSelector == Deployment selector (got {spec['podSelector']})")
    check(spec.get("policyTypes") == ["Ingress", "Egress"], f"{name}: policyTypes Ingress, Egress")
    want = [PROBE_RULE]
    if metrics_rule is not None:
        rule = {"ports": [{"port": metrics_rule["port"], "protocol": "TCP"}]}
        if "from" in metrics_rule:
            rule["from"] = metrics_rule["from"]
        want.append(rule)
    check(spec.get("ingress") == want, f"{name}: ingress rules exact {want} (got {spec.get('ingress')})")
    check(spec.get("egress") == (egress if egress is not None else DEFAULT_EGRESS),
          f"{name}: egress rules (got {spec.get('egress')})")

def check_pdb(name, objs, full, min_available=None, max_unavailable=None):
    d, pod, c = deployment(name, objs, full)
    pdb = objs.get(("PodDisruptionBudget", full))
    check(pdb is not None, f"{name}: PodDisruptionBudget/{full} present")
    if not (pdb and d):
        return
    spec = pdb["spec"]
    check(pdb["apiVersion"] == "policy/v1", f"{name}: PodDisruptionBudget apiVersion policy/v1")
    check(spec.get("selector") == {"matchLabels": selector(d)}, f"{name}: PDB selector == Deployment selector")
    want = {"minAvailable": min_available} if max_unavailable is None else {"maxUnavailable": max_unavailable}
    got = {k: spec[k] for k in ("minAvailable", "maxUnavailable") if k in spec}
    check(got == want, f"{name}: PDB budget exactly {want} (got {got})")

# ---------------------------------------------------------------- defaults
name = "default"
objs = load(name)
FULL = "x-command-cert-manager-issuer"
check_objects(name, objs, expected_objects(FULL, sa=FULL))
check_rbac(name, objs, FULL, FULL)
for (kind, n) in objs:
    if kind != "CustomResourceDefinition":
        check(n.startswith("x-"), f"{name}: {kind}/{n} name carries the release name")
d, pod, c = deployment(name, objs, FULL)
if d:
    sel = {"app.kubernetes.io/name": "command-cert-manager-issuer", "app.kubernetes.io/instance": "x"}
    check(d["spec"]["replicas"] == 1, f"{name}: replicas 1")
    check(d["spec"]["selector"]["matchLabels"] == sel, f"{name}: selector labels")
    check(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()), f"{name}: pod labels match selector")
    check(pod["serviceAccountName"] == FULL, f"{name}: serviceAccountName")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: pod automountServiceAccountToken false")
    check(pod.get("volumes") == [projected_volume()], f"{name}: projected token volume exact (got {pod.get('volumes')})")
    check(c.get("volumeMounts") == [TOKEN_MOUNT], f"{name}: token mount read-only at the SA path")
    check(pod.get("terminationGracePeriodSeconds") == 30, f"{name}: terminationGracePeriodSeconds 30")
    check(pod.get("affinity") == DEFAULT_AFFINITY, f"{name}: default node affinity")
    check("priorityClassName" not in pod, f"{name}: no priorityClassName")
    check("imagePullSecrets" not in pod and "nodeSelector" not in pod and "tolerations" not in pod, f"{name}: no empty pod lists")
    check(pod.get("securityContext") == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, f"{name}: pod securityContext")
    check(c.get("securityContext") == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}, f"{name}: container securityContext")
    check(c["name"] == "command-cert-manager-issuer", f"{name}: container named after the chart")
    check(c["image"] == "keyfactor/command-cert-manager-issuer:0.1.0", f"{name}: image defaults to chart version (got {c['image']})")
    check(c["imagePullPolicy"] == "IfNotPresent", f"{name}: pullPolicy")
    check(c["command"] == ["/command-issuer"], f"{name}: command")
    check(c["args"] == BASE_ARGS + ["--log-format=json", "--log-level=info", "--concurrency=48",
                                    "--per-issuer-concurrency=24", "--pending-poll-concurrency=4"], f"{name}: args exact (got {c['args']})")
    check(c["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": 8081}, "initialDelaySeconds": 15, "periodSeconds": 20, "timeoutSeconds": 5}, f"{name}: liveness probe")
    check(c["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": 8081}, "initialDelaySeconds": 5, "periodSeconds": 10}, f"{name}: readiness probe")
    check("env" not in c and "resources" not in c, f"{name}: no env/resources by default")
for kind in OPTIONAL_KINDS:
    check(not any(k[0] == kind for k in objs), f"{name}: no {kind} by default")
check_metrics_private(name, objs, FULL)
sa = objs.get(("ServiceAccount", FULL))
if sa:
    check(sa.get("automountServiceAccountToken") is False, f"{name}: SA automountServiceAccountToken false")
for kind, n in CRDS:
    crd = objs.get((kind, n))
    if crd:
        check(crd["spec"]["group"] == "command-issuer.keyfactor.com", f"{name}: {n} group")
        check(not crd["metadata"].get("annotations"), f"{name}: {n} no annotations by default")

# ---------------------------------------------------------------- every value non-default
name = "all"
objs = load(name)
FULL = "x-cmdissuer"
check_objects(name, objs, expected_objects(FULL, sa="command-issuer-sa", secrets_cluster=True, cms_cluster=True,
                                           approver=False, crds=False, service=True, service_monitor=True,
                                           network_policy=True, pdb=True),
              namespaces={"ServiceMonitor": "monitoring"})
check_rbac(name, objs, FULL, "command-issuer-sa", secrets_cluster=True, cms_cluster=True, approver=False)
for (kind, n) in objs:
    check(n.startswith("x-") or kind == "ServiceAccount", f"{name}: {kind}/{n} name carries the release name")
d, pod, c = deployment(name, objs, FULL)
if d:
    check(d["spec"]["replicas"] == 2, f"{name}: replicas 2")
    check(d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "cmdissuer", f"{name}: nameOverride in labels")
    meta = d["spec"]["template"]["metadata"]
    check(meta["labels"].get("azure.workload.identity/use") == "true", f"{name}: podLabels")
    check(meta.get("annotations") == {"prometheus.io/scrape": "false"}, f"{name}: podAnnotations")
    check(pod["imagePullSecrets"] == [{"name": "regcred"}], f"{name}: imagePullSecrets")
    check(pod["serviceAccountName"] == "command-issuer-sa", f"{name}: serviceAccount.name")
    check("automountServiceAccountToken" not in pod and "volumes" not in pod and "volumeMounts" not in c,
          f"{name}: automount true -> no projected volume")
    check(pod["priorityClassName"] == "system-cluster-critical", f"{name}: priorityClassName")
    check(pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["fsGroup"] == 65532, f"{name}: podSecurityContext override")
    check(c["securityContext"]["runAsUser"] == 65532, f"{name}: securityContext override")
    check(pod["nodeSelector"] == {"node-role.kubernetes.io/worker": ""}, f"{name}: nodeSelector")
    check(pod["tolerations"][0]["key"] == "dedicated", f"{name}: tolerations")
    check(set(pod["affinity"]) == {"podAntiAffinity"}, f"{name}: affinity replaced (got {list(pod['affinity'])})")
    check(c["image"] == "registry.example.com/keyfactor/command-issuer:9.9.9", f"{name}: image repository/tag")
    check(c["imagePullPolicy"] == "Always", f"{name}: pullPolicy")
    check(c["resources"]["limits"]["memory"] == "256Mi", f"{name}: resources")
    check(c["env"] == [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"},
                       {"name": "NO_PROXY", "value": "10.0.0.0/8,.svc,.cluster.local"}], f"{name}: env list")
    check(c["args"] == base_args(":9090") + ["--log-format=text", "--log-level=debug", "--concurrency=4",
                                    "--per-issuer-concurrency=2", "--pending-poll-concurrency=1",
                                    "--default-health-check-interval=5m",
                                    "--secret-access-granted-at-cluster-level",
                                    "--configmap-access-granted-at-cluster-level",
                                    "--disable-approved-check", "--cluster-resource-namespace=issuer-config"],
          f"{name}: args exact, extraArgs last (got {c['args']})")
sa = objs.get(("ServiceAccount", "command-issuer-sa"))
if sa:
    check(sa.get("automountServiceAccountToken") is True, f"{name}: SA automountServiceAccountToken true")
    check(sa["metadata"]["labels"].get("azure.workload.identity/use") == "true", f"{name}: serviceAccount.labels")
    check(sa["metadata"].get("annotations") == {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"},
          f"{name}: serviceAccount.annotations")
check_metrics_exposed(name, objs, FULL, 9090, sm_ns="monitoring", interval="15s", timeout="5s",
                      sm_labels={"release": "kube-prometheus-stack"},
                      svc_annotations={"example.com/scrape-note": "metrics"})
check_network_policy(name, objs, FULL,
                     metrics_rule={"port": 9090, "from": [{
                         "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]},
                     egress=[
                         {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                          "ports": [{"port": 53, "protocol": "UDP"}]},
                         {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}])
check_pdb(name, objs, FULL, max_unavailable=1)

# ---------------------------------------------------------------- variants
name = "fullname"
objs = load(name)
check_objects(name, objs, expected_objects("acme-issuer", sa="acme-issuer"))
check_rbac(name, objs, "acme-issuer", "acme-issuer")

name = "named-release"   # release name containing the chart name is used as is
objs = load(name)
FULL = "command-cert-manager-issuer"
check_objects(name, objs, expected_objects(FULL, sa=FULL))

name = "second"          # two releases: no cluster-scoped name in common except the CRDs
objs_y = load(name)
objs_x = load("default")
cx = {k for k in objs_x if k[0] in CLUSTER_KINDS} - CRDS
cy = {k for k in objs_y if k[0] in CLUSTER_KINDS} - CRDS
check(cx and cy and not (cx & cy), f"{name}: cluster-scoped RBAC names differ between releases ({sorted(cx & cy)})")
check_rbac(name, objs_y, "y-command-cert-manager-issuer", "y-command-cert-manager-issuer")

name = "crd-annotations"
objs = load(name)
for key in CRDS:
    crd = objs.get(key)
    check(crd is not None and crd["metadata"].get("annotations") == {"helm.sh/resource-policy": "keep"},
          f"{name}: {key[1]} carries crd.annotations")

name = "no-create-sa"
objs = load(name)
FULL = "x-command-cert-manager-issuer"
check_objects(name, objs, expected_objects(FULL, sa=None))
check_rbac(name, objs, FULL, "default")
d, pod, c = deployment(name, objs, FULL)
if d:
    check(pod["serviceAccountName"] == "default", f"{name}: serviceAccountName default")

name = "env-map"
objs = load(name)
d, pod, c = deployment(name, objs, FULL)
if d:
    check(c.get("env") == [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}], f"{name}: env map -> list (got {c.get('env')})")

name = "secrets-only"    # each reader switches on its own value
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL, secrets_cluster=True))
check_rbac(name, objs, FULL, FULL, secrets_cluster=True)
d, pod, c = deployment(name, objs, FULL)
if d:
    check("--secret-access-granted-at-cluster-level" in c["args"] and
          "--configmap-access-granted-at-cluster-level" not in c["args"], f"{name}: only the secret flag")

name = "no-affinity"
objs = load(name)
d, pod, c = deployment(name, objs, FULL)
if d:
    check("affinity" not in pod, f"{name}: affinity=null drops it")

name = "upstream-style"  # the §16.4 install command users copy
objs = load(name)
d, pod, c = deployment(name, objs, FULL)
if d:
    check(c["image"] == "keyfactor/command-cert-manager-issuer:2.6.0", f"{name}: image.tag")
    check(d["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true", f"{name}: podLabels string")
sa = objs.get(("ServiceAccount", FULL))
check(sa is not None and sa["metadata"]["labels"].get("azure.workload.identity/use") == "true"
      and sa["metadata"]["annotations"].get("azure.workload.identity/client-id") == "abc", f"{name}: SA label/annotation")

FULL = "x-command-cert-manager-issuer"
name = "sm-only"         # the ServiceMonitor alone implies the Service and the exposed listener
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL, service_monitor=True))
check_metrics_exposed(name, objs, FULL, 8080)
d, pod, c = deployment(name, objs, FULL)
if d:
    check(c["args"] == base_args(":8080") + ["--log-format=json", "--log-level=info", "--concurrency=48",
                                    "--per-issuer-concurrency=24", "--pending-poll-concurrency=4"],
          f"{name}: args exact (got {c['args']})")

name = "svc-only"
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL, service=True))
check_metrics_exposed(name, objs, FULL, 9100, sm=False)

name = "go-metrics"      # the Go chart's metrics.secure / secureMetrics.enabled are ignored
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL))
check_metrics_private(name, objs, FULL)

name = "np-only"         # no metrics exposure: probe rule only, default egress
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL, network_policy=True))
check_network_policy(name, objs, FULL)
check_metrics_private(name, objs, FULL)

name = "np-metrics"      # metrics exposed, no ingressFrom: metrics port open to any peer
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL, service=True, network_policy=True))
check_network_policy(name, objs, FULL, metrics_rule={"port": 8080})

name = "pdb-default"
objs = load(name)
check_objects(name, objs, expected_objects(FULL, sa=FULL, pdb=True))
check_pdb(name, objs, FULL, min_available=1)

name = "pdb-percent"     # maxUnavailable wins over the default minAvailable
objs = load(name)
check_pdb(name, objs, FULL, max_unavailable="50%")

name = "pdb-zero"        # 0 is a value, not "empty"
objs = load(name)
check_pdb(name, objs, FULL, max_unavailable=0)

name = "pdb-empty"       # neither value: the render fails with a message
status = open(f"{OUT}/pdb-empty.status").read().strip()
err = open(f"{OUT}/pdb-empty.err").read()
check(status == "failed" and "set podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable" in err,
      f"{name}: render fails with a message (status {status}, stderr {err.strip()[:200]})")

for line in open(f"{OUT}/dry-run.results").read().split("\n"):
    if line.strip():
        what, result = line.split()
        check(result == "ok", f"server dry-run: {what}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
