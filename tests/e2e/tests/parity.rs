//! Parity with the Go issuer, case by case against product.md, on a real apiserver with the
//! simulator: issuer conditions and the error strings users search for (§3, §5, §6, §7, §14),
//! annotation overrides and their precedence (§9), enrollment content and hints (§10).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use command_issuer_e2e::fixtures::{install_credentials, issuer_api, CONTROLLER_NAMESPACE};
use command_issuer_e2e::{
    approve, create_certificate_request, make_csr, ready_condition, wait_for, Condition,
    ControlPlane, Controller, Sim,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};

const NS: &str = "parity";

/// How a message is checked.
enum Msg {
    Exact(String),
    Prefix(&'static str),
    Contains(Vec<String>),
}

impl Msg {
    fn check(&self, got: &str) -> bool {
        match self {
            Msg::Exact(m) => got == m,
            Msg::Prefix(p) => got.starts_with(p),
            Msg::Contains(parts) => parts.iter().all(|p| got.contains(p.as_str())),
        }
    }
    fn describe(&self) -> String {
        match self {
            Msg::Exact(m) => format!("exactly {m:?}"),
            Msg::Prefix(p) => format!("starting with {p:?}"),
            Msg::Contains(p) => format!("containing {p:?}"),
        }
    }
}

fn exact(s: &str) -> Msg {
    Msg::Exact(s.to_string())
}

async fn secret(client: &Client, name: &str, type_: &str, data: &[(&str, &str)]) -> Result<()> {
    let map: BTreeMap<&str, &str> = data.iter().copied().collect();
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": name}, "type": type_, "stringData": map}),
    )?;
    Api::<Secret>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &s)
        .await?;
    Ok(())
}

fn spec(sim: &Sim, overrides: Value) -> Value {
    command_issuer_e2e::fixtures::issuer_spec(&sim.host_port(), overrides)
}

async fn create_issuer(client: &Client, name: &str, spec: Value) -> Result<()> {
    let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
                     "metadata": {"name": name, "namespace": NS}, "spec": spec});
    issuer_api(client, "Issuer", Some(NS))
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    Ok(())
}

fn condition_of(o: &kube::core::DynamicObject, t: &str) -> Option<Value> {
    o.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

struct IssuerCase {
    name: &'static str,
    spec: Value,
    ready: &'static str,
    message: Msg,
    supports_metadata: Option<&'static str>,
}

struct CrCase {
    name: &'static str,
    issuer: &'static str,
    kind: &'static str,
    annotations: Vec<(&'static str, String)>,
    csr: Option<String>,
    reason: &'static str,
    message: Msg,
    /// Checks on what Command received (the simulator's record for CN `<name>.parity.test`).
    record: Option<fn(&Value) -> Result<()>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_with_the_go_issuer_case_by_case() -> Result<()> {
    let crds = command_issuer_e2e::fixtures::repo_file("crds");
    let mut cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    let ca = sim.tls_ca_pem().to_string();
    install_credentials(&cp, &sim, &[]).await?;
    cp.create_namespace(NS).await?;
    let basic = "kubernetes.io/basic-auth";
    secret(
        &client,
        "pw-wrong",
        basic,
        &[("username", "command-issuer"), ("password", "wrong")],
    )
    .await?;
    secret(
        &client,
        "norole",
        basic,
        &[("username", "norole"), ("password", "sim-password-3")],
    )
    .await?;
    secret(
        &client,
        "nometadata",
        basic,
        &[("username", "nometadata"), ("password", "sim-password-4")],
    )
    .await?;
    secret(
        &client,
        "tls-type",
        "kubernetes.io/tls",
        &[("tls.crt", "x"), ("tls.key", "y")],
    )
    .await?;
    secret(
        &client,
        "no-password",
        basic,
        &[("username", "command-issuer")],
    )
    .await?;
    secret(
        &client,
        "empty-username",
        basic,
        &[("username", ""), ("password", "x")],
    )
    .await?;
    secret(
        &client,
        "user-at-domain",
        basic,
        &[("username", "issuer@CORP"), ("password", "sim-password-2")],
    )
    .await?;
    secret(
        &client,
        "oauth-incomplete",
        "Opaque",
        &[("tokenUrl", "https://127.0.0.1:1/token"), ("clientId", "c")],
    )
    .await?;
    secret(
        &client,
        "ca-last-good",
        "Opaque",
        &[("a.crt", "garbage"), ("z.crt", &ca)],
    )
    .await?;
    secret(
        &client,
        "ca-last-bad",
        "Opaque",
        &[("a.crt", &ca), ("z.crt", "garbage")],
    )
    .await?;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "ca-cm"}, "data": {"bundle.pem": ca}}))?;
    Api::<ConfigMap>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &cm)
        .await?;

    let prefix_401 = "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: ";
    let issuer_cases = vec![
        IssuerCase { name: "baseline", spec: spec(&sim, json!({})), ready: "True", message: exact("Health check succeeded"), supports_metadata: Some("True") },
        IssuerCase { name: "url-hostname", spec: spec(&sim, json!({"hostname": format!("https://{}/ignored/path", sim.host_port()), "apiPath": "///KeyfactorAPI//"})), ready: "True", message: exact("Health check succeeded"), supports_metadata: None },
        IssuerCase { name: "empty-api-path", spec: spec(&sim, json!({"apiPath": ""})), ready: "False", message: exact("invalid config: apiPath is required"), supports_metadata: None },
        IssuerCase { name: "no-hostname", spec: spec(&sim, json!({"hostname": null})), ready: "False", message: exact("invalid config: hostname is required"), supports_metadata: None },
        IssuerCase { name: "interval-29s", spec: spec(&sim, json!({"healthcheck": {"enabled": true, "interval": "29s"}})), ready: "False", message: exact("interval 29s is invalid, must be greater than or equal to '30s'"), supports_metadata: Some("Unknown") },
        IssuerCase { name: "interval-disabled", spec: spec(&sim, json!({"healthcheck": {"enabled": false}})), ready: "True", message: exact("Health check succeeded"), supports_metadata: None },
        IssuerCase { name: "wrong-password", spec: spec(&sim, json!({"commandSecretName": "pw-wrong"})), ready: "False", message: Msg::Exact(format!("{prefix_401}failed to authenticate, received status code 401 from Keyfactor Command: ")), supports_metadata: None },
        IssuerCase { name: "no-role", spec: spec(&sim, json!({"commandSecretName": "norole"})), ready: "False", message: Msg::Exact(format!("{prefix_401}failed to authenticate, received status code 403 from Keyfactor Command: {{\"ErrorCode\":\"0xA0140002\",\"Message\":\"User norole doesn\\u0027t have the required permission\"}}")), supports_metadata: None },
        IssuerCase { name: "no-metadata-permission", spec: spec(&sim, json!({"commandSecretName": "nometadata"})), ready: "False", message: exact("healthcheck failed: failed to fetch metadata fields from connected Command instance: 403 Forbidden"), supports_metadata: None },
        IssuerCase { name: "missing-secret", spec: spec(&sim, json!({"commandSecretName": "nope"})), ready: "False", message: exact("failed to get Secret containing Issuer credentials, secret name: nope, reason: secrets \"nope\" not found"), supports_metadata: None },
        IssuerCase { name: "unsupported-type", spec: spec(&sim, json!({"commandSecretName": "tls-type"})), ready: "False", message: exact("failed to get Secret containing Issuer credentials: found secret with unsupported type"), supports_metadata: None },
        IssuerCase { name: "no-password", spec: spec(&sim, json!({"commandSecretName": "no-password"})), ready: "False", message: exact("failed to get Secret containing Issuer credentials: found basic auth secret with no password"), supports_metadata: None },
        IssuerCase { name: "empty-username", spec: spec(&sim, json!({"commandSecretName": "empty-username"})), ready: "False", message: exact("invalid config: username is required"), supports_metadata: None },
        IssuerCase { name: "oauth-no-secret", spec: spec(&sim, json!({"commandSecretName": "oauth-incomplete"})), ready: "False", message: exact("failed to get Secret containing Issuer credentials: found secret with no clientSecret"), supports_metadata: None },
        IssuerCase { name: "user-at-domain", spec: spec(&sim, json!({"commandSecretName": "user-at-domain"})), ready: "True", message: exact("Health check succeeded"), supports_metadata: None },
        IssuerCase { name: "ca-missing", spec: spec(&sim, json!({"caSecretName": "missing-ca"})), ready: "False", message: exact("caSecretName specified a name, but failed to get Secret containing CA certificate, secret name: missing-ca, reason: secrets \"missing-ca\" not found"), supports_metadata: None },
        IssuerCase { name: "cm-missing", spec: spec(&sim, json!({"caBundleConfigMapName": "missing-cm"})), ready: "False", message: exact("caBundleConfigMapName specified a name, but failed to get ConfigMap containing CA certificate, configmap name: missing-cm, reason: configmaps \"missing-cm\" not found"), supports_metadata: None },
        IssuerCase { name: "ca-key-missing", spec: spec(&sim, json!({"caBundleKey": "nope.crt"})), ready: "False", message: exact("failed to get CA bundle key from CA certificate data: caBundleKey 'nope.crt' not found in CA bundle data"), supports_metadata: None },
        IssuerCase { name: "configmap-wins", spec: spec(&sim, json!({"caSecretName": "ca-last-bad", "caBundleConfigMapName": "ca-cm", "caBundleKey": null})), ready: "True", message: exact("Health check succeeded"), supports_metadata: None },
        IssuerCase { name: "last-key-good", spec: spec(&sim, json!({"caSecretName": "ca-last-good", "caBundleKey": null})), ready: "True", message: exact("Health check succeeded"), supports_metadata: None },
        IssuerCase { name: "last-key-bad", spec: spec(&sim, json!({"caSecretName": "ca-last-bad", "caBundleKey": null})), ready: "False", message: Msg::Exact(format!("{prefix_401}failed to append custom CA cert to pool")), supports_metadata: None },
        IssuerCase { name: "no-ca-bundle", spec: spec(&sim, json!({"caSecretName": null, "caBundleKey": null})), ready: "False", message: Msg::Prefix("failed to build the healthchecker: failed to create health checker: failed to create new Command API client: Get \"https://127.0.0.1:"), supports_metadata: None },
        IssuerCase { name: "sparse", spec: spec(&sim, json!({"certificateTemplate": null, "certificateAuthorityLogicalName": null})), ready: "True", message: exact("Health check succeeded"), supports_metadata: None },
    ];
    let _ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    for c in &issuer_cases {
        create_issuer(&client, c.name, c.spec.clone()).await?;
    }
    let api = issuer_api(&client, "Issuer", Some(NS));
    let mut failures = Vec::new();
    for c in &issuer_cases {
        let r = wait_for(
            Duration::from_secs(20),
            &format!("issuer case {}", c.name),
            || {
                let api = api.clone();
                async move {
                    let o = api.get(c.name).await.ok()?;
                    let ready = condition_of(&o, "Ready")?;
                    let ok = ready["status"] == c.ready
                        && c.message.check(ready["message"].as_str().unwrap_or(""));
                    let sm_ok = c.supports_metadata.is_none_or(|s| {
                        condition_of(&o, "SupportsMetadata").is_some_and(|m| m["status"] == s)
                    });
                    (ok && sm_ok).then_some(())
                }
            },
        )
        .await;
        if r.is_err() {
            let o = api.get(c.name).await?;
            failures.push(format!(
                "issuer {}: want Ready={} with message {}, got {}",
                c.name,
                c.ready,
                c.message.describe(),
                o.data["status"]
            ));
        } else {
            println!("ok   issuer {}", c.name);
        }
    }

    // CertificateRequest cases, all against ready issuers.
    let bad_pem = make_csr("badpem.parity.test", &[])?
        .0
        .replace("CERTIFICATE REQUEST", "CERTIFICATE");
    let a = |k: &str, v: &str| {
        (
            Box::leak(format!("command-issuer.keyfactor.com/{k}").into_boxed_str()) as &'static str,
            v.to_string(),
        )
    };
    let m = |k: &str, v: &str| {
        (
            Box::leak(format!("metadata.command-issuer.keyfactor.com/{k}").into_boxed_str())
                as &'static str,
            v.to_string(),
        )
    };
    let cr_cases: Vec<CrCase> = vec![
        CrCase { name: "plain", issuer: "baseline", kind: "Issuer", annotations: vec![], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| { expect(r["template"] == "WebServer1y" && r["requested_certificate_authority"] == "Sub-CA", r) }) },
        CrCase { name: "ca-host", issuer: "baseline", kind: "Issuer", annotations: vec![a("certificateAuthorityHostname", "ca01.example.com")], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| expect(r["requested_certificate_authority"] == "ca01.example.com\\Sub-CA", r)) },
        CrCase { name: "template-override", issuer: "baseline", kind: "Issuer", annotations: vec![a("certificateTemplate", "Nope")], csr: None, reason: "Pending",
            message: Msg::Contains(vec!["failed to sign: command enrollment failure: Verify that certificate template 'Nope' exists in Command and belongs to certificate authority 'Sub-CA'. If applicable, verify the Enrollment Pattern configuration in Keyfactor Command, and ensure CSR Enrollment is enabled. Error response from Command: {\"ErrorCode\":\"0x".into(), ": 400 Bad Request".into()]), record: None },
        CrCase { name: "bad-int", issuer: "baseline", kind: "Issuer", annotations: vec![a("enrollmentPatternId", "foobar!")], csr: None, reason: "Pending",
            message: exact("failed to build the signer: failed to create signer: invalid signer config: failed to parse enrollmentPatternId from annotations: strconv.ParseInt: parsing \"foobar!\": invalid syntax"), record: None },
        CrCase { name: "pattern-name", issuer: "baseline", kind: "Issuer", annotations: vec![a("enrollmentPatternName", "Kubernetes Enrollment Pattern"), a("certificateTemplate", "")], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| expect(r["enrollment_pattern_id"] == 1, r)) },
        CrCase { name: "pattern-unknown", issuer: "baseline", kind: "Issuer", annotations: vec![a("enrollmentPatternName", "No Such Pattern")], csr: None, reason: "Pending",
            message: exact("failed to sign: enrollment pattern failure: enrollment pattern not found: No Such Pattern"), record: None },
        CrCase { name: "pattern-id-wins", issuer: "baseline", kind: "Issuer", annotations: vec![a("enrollmentPatternId", "1"), a("enrollmentPatternName", "No Such Pattern"), a("certificateTemplate", "")], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| expect(r["enrollment_pattern_id"] == 1, r)) },
        CrCase { name: "sparse-completed", issuer: "sparse", kind: "Issuer", annotations: vec![a("enrollmentPatternId", "1")], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| expect(r["enrollment_pattern_id"] == 1, r)) },
        CrCase { name: "sparse-unrescued", issuer: "sparse", kind: "Issuer", annotations: vec![], csr: None, reason: "Pending",
            message: exact("failed to build the signer: failed to create signer: invalid signer config: either certificateTemplate, enrollmentPatternName, or enrollmentPatternId must be specified"), record: None },
        CrCase { name: "custom-metadata", issuer: "baseline", kind: "Issuer", annotations: vec![m("ResponsibleTeam", "team@example.com")], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| expect(r["metadata"]["ResponsibleTeam"] == "team@example.com" && r["metadata"]["Issuer-Name"] == "baseline", r)) },
        // Deliberately unlike the Go issuer (where custom metadata won on a name clash): the
        // predefined fields are the controller's record and its key for finding an interrupted
        // enrollment, so a request may not set them.
        CrCase { name: "custom-cannot-set-predefined", issuer: "baseline", kind: "Issuer", annotations: vec![m("Issuer-Name", "chosen")], csr: None, reason: "Pending",
            message: exact("failed to build the signer: failed to create signer: invalid signer config: metadata annotation \"metadata.command-issuer.keyfactor.com/Issuer-Name\" names a field the controller sets itself; remove the annotation"), record: None },
        CrCase { name: "unknown-metadata", issuer: "baseline", kind: "Issuer", annotations: vec![m("NoSuchField", "x")], csr: None, reason: "Pending",
            message: Msg::Contains(vec!["Verify that the metadata fields provided exist in Command.".into(), ": 400 Bad Request".into()]), record: None },
        CrCase { name: "owner-role-name", issuer: "baseline", kind: "Issuer", annotations: vec![a("ownerRoleName", "IssuerRole")], csr: None, reason: "Issued", message: exact("Signed"),
            record: Some(|r| expect(r["owner_role"].to_string().contains("IssuerRole"), r)) },
        CrCase { name: "owner-role-foreign", issuer: "baseline", kind: "Issuer", annotations: vec![a("ownerRoleId", "3")], csr: None, reason: "Pending",
            message: Msg::Contains(vec!["Verify the issuer's security role is assigned to the configured owner role.".into()]), record: None },
        CrCase { name: "bad-pem", issuer: "baseline", kind: "Issuer", annotations: vec![], csr: Some(bad_pem), reason: "Pending",
            message: exact("failed to sign: csr is invalid: PEM block type must be CERTIFICATE REQUEST"), record: None },
        CrCase { name: "unknown-kind", issuer: "baseline", kind: "Foo", annotations: vec![], csr: None, reason: "Failed",
            message: Msg::Prefix("error interpreting issuerRef: "), record: None },
        CrCase { name: "empty-kind", issuer: "baseline", kind: "", annotations: vec![], csr: None, reason: "Issued", message: exact("Signed"), record: None },
        CrCase { name: "not-ready-issuer", issuer: "wrong-password", kind: "Issuer", annotations: vec![], csr: None, reason: "Pending", message: exact("issuer is not ready"), record: None },
    ];
    for c in &cr_cases {
        let (pem, _) = make_csr(
            &format!("{}.parity.test", c.name),
            &[&format!("{}.parity.test", c.name)],
        )?;
        let pem = c.csr.clone().unwrap_or(pem);
        let ann: Vec<(&str, &str)> = c
            .annotations
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        create_certificate_request(&client, NS, c.name, &pem, c.kind, c.issuer, &ann).await?;
        approve(&client, NS, c.name).await?;
    }
    for c in &cr_cases {
        let got = wait_for(
            Duration::from_secs(20),
            &format!("request case {}", c.name),
            || {
                let client = client.clone();
                async move {
                    ready_condition(&client, NS, c.name)
                        .await
                        .ok()
                        .flatten()
                        .filter(|r: &Condition| r.reason == c.reason && c.message.check(&r.message))
                }
            },
        )
        .await;
        if got.is_err() {
            let now = ready_condition(&client, NS, c.name).await?;
            failures.push(format!(
                "request {}: want {} with message {}, got {now:?}",
                c.name,
                c.reason,
                c.message.describe()
            ));
            continue;
        }
        if let Some(check) = c.record {
            let cn = format!("{}.parity.test", c.name);
            let recs = sim.enrollments().await?;
            match recs.iter().find(|r| r["subject_cn"] == cn.as_str()) {
                Some(r) => {
                    if let Err(e) = check(r) {
                        failures.push(format!(
                            "request {}: Command received the wrong thing: {e}",
                            c.name
                        ));
                        continue;
                    }
                }
                None => {
                    failures.push(format!("request {}: no enrollment recorded", c.name));
                    continue;
                }
            }
        }
        println!("ok   request {}", c.name);
    }
    if !failures.is_empty() {
        cp.keep_on_drop(true);
        bail!(
            "{} parity case(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    println!(
        "{} issuer cases and {} request cases passed",
        issuer_cases.len(),
        cr_cases.len()
    );
    Ok(())
}

fn expect(ok: bool, record: &Value) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("record: {record}"))
    }
}
