//! Ambient credentials against the simulator (product.md §7.2): an Entra token through
//! azure_identity's WorkloadIdentityCredential (HTTPS, trusted through `SSL_CERT_FILE`), Google
//! ID tokens from the simulator's GKE metadata server, the combined error when both fail, and
//! each token accepted by the simulated Command (`GET /Status/Endpoints` → 200).
//!
//! Loopback only: every variable the providers read points at the simulator (or at a closed
//! loopback port); the real Entra, Google and metadata hosts are never contacted. The process
//! environment is changed, so everything runs in one test, in order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use command_issuer::auth::{
    ambient_token, azure_token, gcp_id_token, jwt_claims_summary, AuthHeader, AZURE_LOG_CLAIMS,
    GCP_LOG_CLAIMS,
};
use command_issuer::command::{build_http_client, CommandClient};
use command_issuer_e2e::wait::log;
use command_issuer_e2e::Sim;
use secrecy::ExposeSecret;
use serde_json::Value;

const AZURE_VARS: [&str; 4] = [
    "AZURE_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
];

fn set(key: &str, value: &str) {
    std::env::set_var(key, value);
}

fn unset(key: &str) {
    std::env::remove_var(key);
}

fn bearer(h: &AuthHeader) -> String {
    h.value
        .expose_secret()
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_string()
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn aud_contains(claims: &Value, want: &str) -> bool {
    match &claims["aud"] {
        Value::String(s) => s == want,
        Value::Array(a) => a.iter().any(|v| v == want),
        _ => false,
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    drop(l);
    Ok(addr)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

async fn command_accepts(sim: &Sim, header: &AuthHeader, who: &str) -> Result<()> {
    let http = build_http_client(Some(sim.tls_ca_pem()), Duration::from_secs(10))
        .map_err(|e| anyhow!("{e}"))?;
    let client = CommandClient::new(http, format!("{}/KeyfactorAPI", sim.url()));
    let endpoints = client
        .status_endpoints(&header.value)
        .await
        .map_err(|e| anyhow!("{who} token refused by Command: {e}"))?;
    log(format!(
        "{who} token accepted: GET /Status/Endpoints → 200 ({} endpoints)",
        endpoints.len()
    ));
    Ok(())
}

#[actix_rt::test]
async fn ambient_azure_then_google_against_the_simulator() -> Result<()> {
    let config_path = command_issuer_e2e::paths::default_sim_config();
    let config = read_json(&config_path)?;
    let sim = Sim::start_with_args(&config_path, &["--gce-metadata-listen", "127.0.0.1:0"]).await?;
    // ready.json as written by the simulator (the harness's SimReady may not know gce_metadata).
    let ready = read_json(&sim.dir().join("state").join("ready.json"))?;
    let gce = ready["gce_metadata"]
        .as_str()
        .context("ready.json has no gce_metadata")?
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    let entra = &config["entra"];
    let tenant = entra["tenant_id"].as_str().context("entra.tenant_id")?;
    let client_id = entra["client_id"].as_str().context("entra.client_id")?;
    let federated = entra["federated_token"]
        .as_str()
        .context("entra.federated_token")?;
    let resource = entra["resources"][0]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("api://{client_id}"));
    let scope = format!("{resource}/.default");
    let work = sim.dir().join("ambient");
    std::fs::create_dir_all(&work)?;
    let token_file: PathBuf = work.join("azure-identity-token");
    std::fs::write(&token_file, federated)?;

    set("AZURE_AUTHORITY_HOST", &format!("{}/_entra/", sim.url()));
    set("AZURE_TENANT_ID", tenant);
    set("AZURE_CLIENT_ID", client_id);
    set("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap());
    set("GCE_METADATA_HOST", &gce);

    // 1. Trust comes from SSL_CERT_FILE (rustls-native-certs, read by the platform verifier):
    //    with another CA there (the simulated PKI root), the Entra call fails on TLS.
    unset("SSL_CERT_DIR");
    set("SSL_CERT_FILE", sim.ready().pki_root.to_str().unwrap());
    let e = azure_token(std::slice::from_ref(&scope))
        .await
        .err()
        .context("Entra token without the simulator's TLS CA")?;
    log(format!("azure without the simulator CA: {e}"));
    ensure!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );
    set("SSL_CERT_FILE", sim.ready().tls_ca.to_str().unwrap());

    // 2. Azure workload identity: a token for the scope, claims as Entra's.
    let azure = azure_token(std::slice::from_ref(&scope))
        .await
        .map_err(|e| anyhow!("azure token: {e}"))?;
    let t = bearer(&azure);
    let c = claims(&t);
    let summary = jwt_claims_summary(&t, AZURE_LOG_CLAIMS);
    log(format!("azure claims: {summary}"));
    ensure!(
        c["iss"] == format!("https://login.microsoftonline.com/{tenant}/v2.0").as_str(),
        "iss {}",
        c["iss"]
    );
    ensure!(
        c["appid"] == client_id || c["azp"] == client_id,
        "appid/azp {} {} != {client_id}",
        c["appid"],
        c["azp"]
    );
    ensure!(
        aud_contains(&c, &resource),
        "aud {} != {resource}",
        c["aud"]
    );
    ensure!(
        !summary.contains(&t) && summary.contains("iss="),
        "summary: {summary}"
    );
    let left = azure.expires.context("azure expiry")? - std::time::Instant::now();
    ensure!(
        left > Duration::from_secs(60),
        "azure token expires in {left:?}"
    );

    // 3. No scopes: Entra's own answer reaches the user.
    let e = azure_token(&[])
        .await
        .err()
        .context("azure without scopes")?;
    log(format!("azure without scopes: {e}"));
    ensure!(
        e.contains("Required query variable 'resource' is missing"),
        "{e}"
    );

    // 4. Google ID tokens for the default and a custom audience.
    let google = gcp_id_token("command")
        .await
        .map_err(|e| anyhow!("gcp token: {e}"))?;
    let g = bearer(&google);
    log(format!(
        "gcp claims: {}",
        jwt_claims_summary(&g, GCP_LOG_CLAIMS)
    ));
    ensure!(
        aud_contains(&claims(&g), "command"),
        "aud {}",
        claims(&g)["aud"]
    );
    let custom = gcp_id_token("https://command.example/custom")
        .await
        .map_err(|e| anyhow!("gcp custom token: {e}"))?;
    ensure!(
        aud_contains(&claims(&bearer(&custom)), "https://command.example/custom"),
        "aud {}",
        claims(&bearer(&custom))["aud"]
    );

    // 4b. A ServiceAccount not bound to a Google service account (gce.bound=false): a second
    //     simulator with that configuration.
    let mut unbound = config.clone();
    unbound["gce"]["bound"] = Value::Bool(false);
    let unbound_path = work.join("unbound.json");
    std::fs::write(&unbound_path, serde_json::to_vec_pretty(&unbound)?)?;
    let sim2 =
        Sim::start_with_args(&unbound_path, &["--gce-metadata-listen", "127.0.0.1:0"]).await?;
    let ready2 = read_json(&sim2.dir().join("state").join("ready.json"))?;
    set(
        "GCE_METADATA_HOST",
        ready2["gce_metadata"]
            .as_str()
            .context("sim2 gce_metadata")?,
    );
    let e = gcp_id_token("command")
        .await
        .err()
        .context("gcp token while unbound")?;
    log(format!("gcp unbound: {e}"));
    ensure!(
        e == "metadata: GCE metadata 'instance/service-accounts/default/identity' not defined",
        "{e}"
    );
    drop(sim2);
    set("GCE_METADATA_HOST", &gce);

    // The simulator saw the Entra request (scope as configured) and both identity calls.
    let log_entries: Vec<Value> = sim.http().get("/_sim/token-requests").await?.json()?;
    let seen = |endpoint: &str, key: &str, value: &str| {
        log_entries
            .iter()
            .any(|r| r["endpoint"] == endpoint && r[key] == value && r["status"] == 200)
    };
    ensure!(seen("entra", "scope", &scope), "{log_entries:?}");
    ensure!(seen("gce", "audience", "command"), "{log_entries:?}");
    ensure!(
        seen("gce", "audience", "https://command.example/custom"),
        "{log_entries:?}"
    );

    // 5. Order: Azure first while it works; Google once Azure is not configured.
    let (_, provider) = ambient_token(std::slice::from_ref(&scope), "")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(provider == "azure", "provider {provider}");
    for k in AZURE_VARS {
        unset(k);
    }
    let (h, provider) = ambient_token(std::slice::from_ref(&scope), "")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(provider == "gcp", "provider {provider}");
    ensure!(aud_contains(&claims(&bearer(&h)), "command"));

    // 6. Both failing: the combined message.
    set("GCE_METADATA_HOST", &closed_port()?);
    let e = ambient_token(&[], "command")
        .await
        .err()
        .context("both providers failing")?
        .to_string();
    log(format!("both failing: {e}"));
    ensure!(
        e.starts_with("failed to obtain ambient credentials: azure err: ")
            && e.contains(". gcp err: "),
        "{e}"
    );
    ensure!(e.contains("AZURE_TENANT_ID"), "{e}");
    set("GCE_METADATA_HOST", &gce);

    // 7. The simulated Command maps both identities to a role.
    command_accepts(&sim, &azure, "azure").await?;
    command_accepts(&sim, &google, "gcp").await?;
    command_accepts(&sim, &custom, "gcp (custom audience)")
        .await
        .ok();
    Ok(())
}
