//! OAuth client credentials end to end: the simulator's identity provider mints signed JWTs,
//! its Command validates them; the controller fetches one token per issuer, falls back from
//! Basic to body client authentication, refreshes before expiry, and retries a 401 once.

use std::time::Duration;

use anyhow::{ensure, Result};
use command_issuer_e2e::fixtures::{
    install_credentials, issue_and_wait, issuer_api, repo_file, wait_issuer_ready,
    CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::{events_for, wait_for, ControlPlane, Controller, Sim};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

async fn oauth_secret(
    client: &Client,
    name: &str,
    token_url: &str,
    id: &str,
    secret: &str,
) -> Result<()> {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "type": "Opaque",
        "stringData": {"tokenUrl": token_url, "clientId": id, "clientSecret": secret},
    }))?;
    Api::<Secret>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &s)
        .await?;
    Ok(())
}

async fn issuer(client: &Client, sim: &Sim, name: &str, secret: &str) -> Result<()> {
    let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hostname": sim.host_port(), "commandSecretName": secret, "caSecretName": "command-ca-secret",
                 "caBundleKey": "ca.crt", "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"}});
    issuer_api(client, "Issuer", Some("default"))
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    Ok(())
}

async fn issue(client: &Client, name: &str, issuer: &str) -> Result<()> {
    issue_and_wait(client, "default", name, "Issuer", issuer, "oauth.test").await?;
    // The Event follows the status write: wait for it, then nothing else may be there.
    let reasons = wait_for(
        Duration::from_secs(10),
        &format!("{name} Issued Event"),
        || async {
            let events = events_for(client, "default", name).await.ok()?;
            let reasons: Vec<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
            reasons.iter().any(|r| r == "Issued").then_some(reasons)
        },
    )
    .await?;
    ensure!(
        reasons == ["Issued"],
        "{name}: issued without any failed attempt, Events {reasons:?}"
    );
    Ok(())
}

async fn token_requests(sim: &Sim, client_id: &str) -> Result<Vec<Value>> {
    let all: Vec<Value> = sim.http().get("/_sim/token-requests").await?.json()?;
    Ok(all
        .into_iter()
        .filter(|r| r["client_id"] == client_id)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_client_credentials_end_to_end() -> Result<()> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_credentials(&cp, &sim, &[]).await?;
    let token_url = format!("{}/_idp/token", sim.url());
    // The documented example, pointed at the simulator's identity provider.
    cp.apply_file(&repo_file("docs/examples/oauth-secret.yaml"))
        .await?;
    Api::<Secret>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .patch(
            "command-oauth-secret",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"tokenUrl": token_url}})),
        )
        .await?;
    oauth_secret(
        &client,
        "basic-only",
        &token_url,
        "basic-only-client",
        "oauth-secret-2",
    )
    .await?;
    oauth_secret(
        &client,
        "body-only",
        &token_url,
        "body-only-client",
        "oauth-secret-3",
    )
    .await?;
    oauth_secret(
        &client,
        "wrong-secret",
        &token_url,
        "issuer-client",
        "not-the-secret",
    )
    .await?;
    oauth_secret(
        &client,
        "no-role",
        &token_url,
        "norole-client",
        "oauth-secret-4",
    )
    .await?;
    let ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    for (name, secret) in [
        ("oauth", "command-oauth-secret"),
        ("basic-only", "basic-only"),
        ("body-only", "body-only"),
        ("wrong-secret", "wrong-secret"),
        ("no-role", "no-role"),
    ] {
        issuer(&client, &sim, name, secret).await?;
    }

    // Each client-auth style works, the other one being refused by the token endpoint first.
    for name in ["oauth", "basic-only", "body-only"] {
        wait_issuer_ready(
            &client,
            "Issuer",
            Some("default"),
            name,
            "True",
            Duration::from_secs(20),
        )
        .await?;
    }
    let body_only = token_requests(&sim, "body-only-client").await?;
    println!("body-only token requests: {body_only:?}");
    ensure!(
        body_only
            .iter()
            .any(|r| r["auth_style"] == "body" && r["status"] == 200),
        "body fallback used"
    );

    // Clear errors for a wrong secret and an identity without a role.
    let c = wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "wrong-secret",
        "False",
        Duration::from_secs(20),
    )
    .await?;
    let m = c["message"].as_str().unwrap_or("");
    ensure!(
        m.starts_with("failed to build the healthchecker: failed to create health checker: failed to create new Command API client: failed to retrieve OAuth token: oauth2: cannot fetch token: 401 Unauthorized Response: ")
            && m.contains("invalid_client"),
        "{m}"
    );
    let c = wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "no-role",
        "False",
        Duration::from_secs(20),
    )
    .await?;
    ensure!(
        c["message"].as_str().unwrap_or("").contains(
            "received status code 403 from Keyfactor Command: {\"ErrorCode\":\"0xA0140002\""
        ),
        "{c}"
    );

    // One token for many requests.
    let before = token_requests(&sim, "issuer-client")
        .await?
        .iter()
        .filter(|r| r["status"] == 200)
        .count();
    for i in 0..3 {
        issue(&client, &format!("cached-{i}"), "oauth").await?;
    }
    let after = token_requests(&sim, "issuer-client")
        .await?
        .iter()
        .filter(|r| r["status"] == 200)
        .count();
    ensure!(
        after == before,
        "the cached token served three enrollments ({before} → {after} fetches)"
    );

    // Revoked (stale) token: the 401 is retried once with a fresh token, no failed request.
    let r = sim.admin_post("/_sim/tokens/revoke", None).await?;
    ensure!(r.status == 200, "revoke: {}", r.status);
    issue(&client, "after-revoke", "oauth").await?;
    let fetched = token_requests(&sim, "issuer-client")
        .await?
        .iter()
        .filter(|r| r["status"] == 200)
        .count();
    ensure!(
        fetched == after + 1,
        "exactly one new token after the 401 ({after} → {fetched})"
    );

    // Short-lived tokens are refreshed before they expire: every request still succeeds.
    let r = sim
        .admin_post(
            "/_sim/oauth-clients/issuer-client/lifetime",
            Some(&json!({"secs": 12})),
        )
        .await?;
    ensure!(r.status == 200, "lifetime: {}", r.status);
    sim.admin_post("/_sim/tokens/revoke", None).await?;
    issue(&client, "short-1", "oauth").await?;
    let t0 = std::time::Instant::now();
    // Past the 2 s the controller keeps a 12 s token (10 s margin) — wait on the clock itself.
    wait_for(
        Duration::from_secs(10),
        "the short token's local validity to pass",
        || async { (t0.elapsed() > Duration::from_secs(3)).then_some(()) },
    )
    .await?;
    issue(&client, "short-2", "oauth").await?;
    let ok: Vec<_> = token_requests(&sim, "issuer-client")
        .await?
        .into_iter()
        .filter(|r| r["status"] == 200)
        .collect();
    ensure!(
        ok.len() >= fetched + 2,
        "refreshed before expiry: {} fetches",
        ok.len()
    );
    let logs = ctl.logs();
    ensure!(
        !logs.contains("oauth-secret-1"),
        "a client secret reached the log"
    );
    Ok(())
}
