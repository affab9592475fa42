//! Ambient credentials (product.md §7.2, command-api.md §3.2 items 2–3): an issuer without
//! `commandSecretName` gets a bearer token from Azure workload identity first, else a Google ID
//! token from the GKE metadata server; both failing gives
//! `failed to obtain ambient credentials: azure err: <a>. gcp err: <b>`.
//!
//! Azure is azure_identity's `WorkloadIdentityCredential` only (no managed identity / IMDS, no
//! CLI), configured from `AZURE_AUTHORITY_HOST`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
//! `AZURE_FEDERATED_TOKEN_FILE`. Its HTTP client is reqwest over rustls with the ring provider;
//! server certificates are checked against the platform roots (rustls-platform-verifier →
//! rustls-native-certs, which honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
//!
//! Google is a plain-HTTP GET on `GCE_METADATA_HOST` (default `metadata.google.internal`) with
//! `Metadata-Flavor: Google`, as Go's `cloud.google.com/go/compute/metadata` does on GKE.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_core::http::{AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, Url};
use azure_identity::{
    ClientAssertionCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::Engine;
use secrecy::SecretString;

use super::{urlencode, AuthError, AuthHeader, EXPIRY_MARGIN, MAX_TOKEN_LIFETIME};

/// Budget for one provider's token request (upstream: a 10 s context around `GetToken`).
pub const AMBIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Google ID token audience when `spec.audience` is empty.
pub const DEFAULT_AUDIENCE: &str = "command";
/// Claims logged for an Azure access token.
pub const AZURE_LOG_CLAIMS: &[&str] = &["aud", "appid", "azp", "iss", "sub", "oid"];
/// Claims logged for a Google ID token.
pub const GCP_LOG_CLAIMS: &[&str] = &["aud", "iss", "sub", "email"];

const AZURE_PUBLIC_CLOUD: &str = "https://login.microsoftonline.com";
const AZURE_ENV: [&str; 3] = [
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
];
const GCE_METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";
const GCE_DEFAULT_HOST: &str = "metadata.google.internal";
const GCE_IDENTITY: &str = "instance/service-accounts/default/identity";

/// Splits `spec.scopes` on commas and whitespace; empty items are dropped (upstream splits on
/// `,` only and keeps empties — a deliberate difference).
pub fn split_scopes(scopes: &str) -> Vec<String> {
    scopes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The audience actually requested: `spec.audience`, or `command` when empty.
pub fn effective_audience(audience: &str) -> &str {
    let a = audience.trim();
    if a.is_empty() {
        DEFAULT_AUDIENCE
    } else {
        a
    }
}

/// Azure, then Google (product.md §7.2). Returns the header and which provider produced it
/// (`"azure"` or `"gcp"`); logs the token's non-secret claims, never the token.
pub async fn ambient_token(
    scopes: &[String],
    audience: &str,
) -> Result<(AuthHeader, &'static str), AuthError> {
    let azure_err = match azure_token(scopes).await {
        Ok(h) => {
            log_claims("azure", &h, AZURE_LOG_CLAIMS);
            return Ok((h, "azure"));
        }
        Err(e) => e,
    };
    match gcp_id_token(effective_audience(audience)).await {
        Ok(h) => {
            log_claims("gcp", &h, GCP_LOG_CLAIMS);
            Ok((h, "gcp"))
        }
        Err(gcp_err) => Err(combined_error(&azure_err, &gcp_err)),
    }
}

/// `failed to obtain ambient credentials: azure err: <a>. gcp err: <b>`.
pub fn combined_error(azure_err: &str, gcp_err: &str) -> AuthError {
    AuthError::Token(format!(
        "failed to obtain ambient credentials: azure err: {azure_err}. gcp err: {gcp_err}"
    ))
}

fn log_claims(provider: &str, header: &AuthHeader, keys: &[&str]) {
    use secrecy::ExposeSecret;
    let token = header
        .value
        .expose_secret()
        .strip_prefix("Bearer ")
        .unwrap_or_default();
    tracing::info!(
        provider,
        claims = %jwt_claims_summary(token, keys),
        "obtained ambient credentials; a 401 from Command means no Command identity provider \
         has this token's iss as its authority"
    );
}

// ---------------------------------------------------------------------------------------------
// Azure workload identity

/// What `WorkloadIdentityCredential` needs, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkloadEnv {
    authority_host: String,
    tenant_id: String,
    client_id: String,
    token_file: PathBuf,
}

/// Reads the workload identity variables through `get`; all missing ones are named at once.
fn workload_env(get: &dyn Fn(&str) -> Option<String>) -> Result<WorkloadEnv, String> {
    let val = |k: &str| {
        get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let missing: Vec<&str> = AZURE_ENV
        .iter()
        .copied()
        .filter(|k| val(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "WorkloadIdentityCredential: environment variable{} {} not set (Azure workload \
             identity needs the pod label azure.workload.identity/use: \"true\")",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
        ));
    }
    let [tenant_id, client_id, token_file] = AZURE_ENV.map(|k| val(k).unwrap_or_default());
    Ok(WorkloadEnv {
        authority_host: val("AZURE_AUTHORITY_HOST").unwrap_or_else(|| AZURE_PUBLIC_CLOUD.into()),
        tenant_id,
        client_id,
        token_file: PathBuf::from(token_file),
    })
}

/// An Entra access token for `scopes` from Azure workload identity, within 10 s. No scopes →
/// the request goes out with an empty `scope` (as upstream, whose split of "" yields one empty
/// scope) and Entra's answer is the error users search for.
pub async fn azure_token(scopes: &[String]) -> Result<AuthHeader, String> {
    azure_token_with(&|k| std::env::var(k).ok(), scopes).await
}

async fn azure_token_with(
    get: &dyn Fn(&str) -> Option<String>,
    scopes: &[String],
) -> Result<AuthHeader, String> {
    let env = workload_env(get)?;
    let credential = workload_credential(&env)?;
    let mut scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    if scope_refs.is_empty() {
        scope_refs.push("");
    }
    let fetch = credential.get_token(&scope_refs, None);
    let deadline = azure_core::sleep(azure_core::time::Duration::seconds(
        AMBIENT_TIMEOUT.as_secs() as i64,
    ));
    let token = match futures::future::select(fetch, Box::pin(deadline)).await {
        futures::future::Either::Left((result, _)) => result.map_err(|e| error_chain(&e))?,
        futures::future::Either::Right(_) => {
            return Err(format!(
                "WorkloadIdentityCredential: no token within {} s",
                AMBIENT_TIMEOUT.as_secs()
            ))
        }
    };
    let expires = expiry_from_unix(
        token.expires_on.unix_timestamp(),
        Instant::now(),
        now_unix(),
    );
    Ok(AuthHeader {
        value: SecretString::from(format!("Bearer {}", token.token.secret())),
        expires: Some(expires),
    })
}

fn workload_credential(env: &WorkloadEnv) -> Result<Arc<WorkloadIdentityCredential>, String> {
    let authority = Url::parse(&env.authority_host)
        .map_err(|e| format!("invalid AZURE_AUTHORITY_HOST {:?}: {e}", env.authority_host))?;
    // The process-wide rustls provider is ring, as for every other TLS client here (reqwest is
    // built with `rustls-no-provider`); installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(AMBIENT_TIMEOUT)
        .timeout(AMBIENT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            format!(
                "WorkloadIdentityCredential: HTTP client: {}",
                error_chain(&e)
            )
        })?;
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = env.authority_host.clone();
    let client_options = ClientOptions {
        cloud: Some(Arc::new(cloud.into())),
        // One attempt: the reconcile loop retries, and the first error is the informative one.
        retry: RetryOptions::none(),
        transport: Some(azure_core::http::Transport::new(Arc::new(
            AuthorityPathClient {
                inner: http,
                prefix: authority_path_prefix(&authority),
            },
        ))),
        ..Default::default()
    };
    let options = WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions { client_options },
        tenant_id: Some(env.tenant_id.clone()),
        client_id: Some(env.client_id.clone()),
        token_file_path: Some(env.token_file.clone()),
    };
    WorkloadIdentityCredential::new(Some(options)).map_err(|e| error_chain(&e))
}

/// The path of `AZURE_AUTHORITY_HOST` without its trailing `/` ("" for a bare host).
fn authority_path_prefix(authority: &Url) -> String {
    authority.path().trim_end_matches('/').to_string()
}

/// `prefix` + the request path, unless the path already carries the prefix.
fn prefixed_path(prefix: &str, path: &str) -> Option<String> {
    if prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/")) {
        return None;
    }
    Some(format!("{prefix}{path}"))
}

/// azure_identity joins `/{tenant}/oauth2/v2.0/token` onto the authority host as an absolute
/// path, dropping any path the host has (`https://host/_entra/` → `https://host/{tenant}/…`).
/// This transport puts that path back, so an authority host behind a path prefix works.
#[derive(Debug)]
struct AuthorityPathClient {
    inner: reqwest::Client,
    prefix: String,
}

type ResponseFuture<'a> =
    Pin<Box<dyn Future<Output = azure_core::Result<AsyncRawResponse>> + Send + 'a>>;

// `HttpClient` is an `#[async_trait]` trait; this is its expanded form, to avoid a dependency on
// the async-trait macro for one method.
impl HttpClient for AuthorityPathClient {
    fn execute_request<'life0, 'life1, 'async_trait>(
        &'life0 self,
        request: &'life1 Request,
    ) -> ResponseFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let response = match prefixed_path(&self.prefix, request.url().path()) {
                None => self.inner.execute_request(request).await?,
                Some(path) => {
                    let mut request = request.clone();
                    request.url_mut().set_path(&path);
                    self.inner.execute_request(&request).await?
                }
            };
            clamp_token_response(response).await
        })
    }
}

/// Passes a successful answer on with its lifetimes clamped by [`clamp_entra_lifetimes`];
/// anything else untouched.
async fn clamp_token_response(response: AsyncRawResponse) -> azure_core::Result<AsyncRawResponse> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (status, mut headers, body) = response.deconstruct();
    let bytes = body.collect().await?;
    Ok(match clamp_entra_lifetimes(&bytes) {
        Some(clamped) => {
            headers.insert(
                azure_core::http::headers::CONTENT_LENGTH,
                clamped.len().to_string(),
            );
            AsyncRawResponse::from_bytes(status, headers, clamped)
        }
        None => AsyncRawResponse::from_bytes(status, headers, bytes),
    })
}

/// A token answer whose `expires_in` / `ext_expires_in` lie outside `0..=24 h` (or are not
/// integers) rewritten with them clamped into that range; None when nothing needs clamping.
/// azure_identity 1.0 computes `now_utc() + Duration::seconds(expires_in)`, which panics for
/// a lifetime past year 9999 (e.g. `i64::MAX`), so a hostile Entra answer must not reach it
/// unclamped; a negative lifetime becomes 0 (already expired), a huge one the 24 h cap.
fn clamp_entra_lifetimes(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    let cap = MAX_TOKEN_LIFETIME.as_secs();
    let mut changed = false;
    for key in ["expires_in", "ext_expires_in"] {
        let Some(serde_json::Value::Number(n)) = object.get(key) else {
            continue;
        };
        let clamped = match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => secs.min(cap),
            // Fractional seconds are cut (the f64 → u64 `as` cast saturates, never panics).
            (None, Some(secs)) if secs > 0.0 => (secs.min(cap as f64)) as u64,
            _ => 0,
        };
        if n.as_u64() != Some(clamped) {
            object.insert(key.to_string(), clamped.into());
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// An error and its sources on one line, each cause added once; azure_identity's
/// "To troubleshoot, visit …" link moves to the end.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    const LINK: &str = "\nTo troubleshoot, visit ";
    let top = err.to_string();
    let (mut out, link) = match top.find(LINK) {
        Some(i) => (top[..i].to_string(), Some(top[i + 1..].trim().to_string())),
        None => (top.clone(), None),
    };
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !top.contains(&text) && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    if let Some(link) = link {
        out = format!("{}. {link}", out.trim_end().trim_end_matches('.'));
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Google ID token from the GKE metadata server

/// The metadata URL for an ID token with `audience` on `host` (`GCE_METADATA_HOST`).
pub fn gce_identity_url(host: &str, audience: &str) -> String {
    format!(
        "http://{host}/computeMetadata/v1/{GCE_IDENTITY}?audience={}&format=full",
        urlencode(audience)
    )
}

/// A Google-signed ID token for `audience` from the metadata server; valid until the JWT's
/// `exp` minus the refresh margin.
pub async fn gcp_id_token(audience: &str) -> Result<AuthHeader, String> {
    let host = std::env::var(GCE_METADATA_HOST_ENV)
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| GCE_DEFAULT_HOST.to_string());
    gcp_id_token_from(&host, audience).await
}

async fn gcp_id_token_from(host: &str, audience: &str) -> Result<AuthHeader, String> {
    let url = gce_identity_url(host, audience);
    let http = awc::Client::builder()
        .connector(awc::Connector::new().timeout(AMBIENT_TIMEOUT))
        .timeout(AMBIENT_TIMEOUT)
        .disable_redirects()
        .finish();
    let resp = http
        .get(&url)
        .insert_header(("Metadata-Flavor", "Google"))
        .send()
        .await
        .map_err(|e| format!("google: could not find default credentials: Get \"{url}\": {e}"))?;
    let status = resp.status();
    let mut resp = resp.timeout(AMBIENT_TIMEOUT);
    let body = resp
        .body()
        .limit(64 * 1024)
        .await
        .map_err(|e| format!("metadata: reading GCE metadata '{GCE_IDENTITY}': {e}"))?;
    gce_identity_response(status.as_u16(), &body, Instant::now(), now_unix())
}

/// Interprets the metadata server's answer the way Go's metadata and idtoken packages do.
fn gce_identity_response(
    status: u16,
    body: &[u8],
    now: Instant,
    now_unix: i64,
) -> Result<AuthHeader, String> {
    let text = String::from_utf8_lossy(body);
    match status {
        200 => {}
        404 => {
            return Err(format!(
                "metadata: GCE metadata '{GCE_IDENTITY}' not defined"
            ))
        }
        code => return Err(format!("compute: Received {code} `{}`", text.trim())),
    }
    let token = text.trim();
    let exp = jwt_claims(token)
        .and_then(|c| c.get("exp").and_then(serde_json::Value::as_i64))
        .ok_or_else(|| {
            "idtoken: the metadata server's identity token is not a JWT with exp".to_string()
        })?;
    Ok(AuthHeader {
        value: SecretString::from(format!("Bearer {token}")),
        expires: Some(expiry_from_unix(exp, now, now_unix)),
    })
}

// ---------------------------------------------------------------------------------------------
// JWT helpers

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// `exp` (Unix seconds) as the Instant to refresh at: `exp − EXPIRY_MARGIN`, not before `now`
/// and at most [`MAX_TOKEN_LIFETIME`] ahead, so a hostile `exp` cannot overflow the Instant.
fn expiry_from_unix(exp: i64, now: Instant, now_unix: i64) -> Instant {
    let left = u64::try_from(exp.saturating_sub(now_unix)).unwrap_or(0);
    let left = Duration::from_secs(left).min(MAX_TOKEN_LIFETIME);
    now.checked_add(left.saturating_sub(EXPIRY_MARGIN))
        .unwrap_or(now)
}

/// The payload of a compact JWS, unverified.
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Non-secret claims for the log, in `keys` order, absent ones left out: `iss=… sub=… aud=…`.
/// Never the token itself.
pub fn jwt_claims_summary(token: &str, keys: &[&str]) -> String {
    let Some(claims) = jwt_claims(token) else {
        return "claims unavailable: not a JWT".to_string();
    };
    keys.iter()
        .filter_map(|k| {
            let v = claims.get(*k)?;
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Some(format!("{k}={v}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"signature")
        )
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn scopes_split_on_commas_and_whitespace() {
        assert_eq!(
            split_scopes("api://a/.default, b\tc\n,,d  "),
            vec!["api://a/.default", "b", "c", "d"]
        );
        assert_eq!(split_scopes("api://x/.default"), vec!["api://x/.default"]);
        assert!(split_scopes("").is_empty());
        assert!(split_scopes(" , ,\n").is_empty());
    }

    #[test]
    fn audience_defaults_to_command() {
        assert_eq!(effective_audience(""), "command");
        assert_eq!(effective_audience("  "), "command");
        assert_eq!(effective_audience("https://cmd"), "https://cmd");
    }

    #[test]
    fn workload_env_names_every_missing_variable() {
        let e = workload_env(&env_of(&[])).unwrap_err();
        assert!(e.starts_with("WorkloadIdentityCredential: environment variables "));
        assert!(e.contains("AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE"));
        let e = workload_env(&env_of(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", " "),
        ]))
        .unwrap_err();
        assert!(
            e.contains("environment variable AZURE_FEDERATED_TOKEN_FILE not set"),
            "{e}"
        );
        let ok = workload_env(&env_of(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
        ]))
        .unwrap();
        assert_eq!(ok.authority_host, "https://login.microsoftonline.com");
        assert_eq!(ok.token_file, PathBuf::from("/f"));
    }

    #[actix_rt::test]
    async fn azure_without_environment_fails_at_once() {
        let started = Instant::now();
        let e = azure_token_with(&env_of(&[]), &["api://x/.default".into()])
            .await
            .unwrap_err();
        assert!(e.contains("AZURE_TENANT_ID"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[actix_rt::test]
    async fn azure_unreadable_token_file_is_reported_before_any_request() {
        // The authority is a closed loopback port: a request would fail differently.
        let e = azure_token_with(
            &env_of(&[
                ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9/"),
                ("AZURE_TENANT_ID", "tenant"),
                ("AZURE_CLIENT_ID", "client"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/azure-token"),
            ]),
            &["api://x/.default".into()],
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("failed to read federated token from file /nonexistent/azure-token"),
            "{e}"
        );
        assert!(e.contains("No such file"), "{e}");
    }

    #[actix_rt::test]
    async fn azure_refuses_a_plain_http_authority() {
        let dir = std::env::temp_dir().join(format!("ambient-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "fed").unwrap();
        let e = azure_token_with(
            &env_of(&[
                ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/"),
                ("AZURE_TENANT_ID", "tenant"),
                ("AZURE_CLIENT_ID", "client"),
                ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
            ]),
            &[],
        )
        .await
        .unwrap_err();
        assert!(e.contains("authority host doesn't use HTTPS scheme"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn authority_path_is_kept() {
        let u = Url::parse("https://127.0.0.1:8443/_entra/").unwrap();
        assert_eq!(authority_path_prefix(&u), "/_entra");
        let u = Url::parse("https://login.microsoftonline.com").unwrap();
        assert_eq!(authority_path_prefix(&u), "");
        assert_eq!(
            prefixed_path("/_entra", "/t/oauth2/v2.0/token").as_deref(),
            Some("/_entra/t/oauth2/v2.0/token")
        );
        assert_eq!(
            prefixed_path("/_entra", "/_entra/t/oauth2/v2.0/token"),
            None
        );
        assert_eq!(prefixed_path("", "/t/oauth2/v2.0/token"), None);
    }

    #[test]
    fn metadata_url_and_answers() {
        assert_eq!(
            gce_identity_url("127.0.0.1:8080", "api://my aud"),
            "http://127.0.0.1:8080/computeMetadata/v1/instance/service-accounts/default/identity?audience=api%3A%2F%2Fmy+aud&format=full"
        );
        let now = Instant::now();
        let t = jwt(serde_json::json!({"aud":"command","exp": 10_000 + 3600, "email":"a@b"}));
        let h = gce_identity_response(200, format!("{t}\n").as_bytes(), now, 10_000).unwrap();
        assert_eq!(h.value.expose_secret(), format!("Bearer {t}"));
        assert_eq!(h.expires, Some(now + Duration::from_secs(3590)));
        assert_eq!(
            gce_identity_response(404, b"not found", now, 0).unwrap_err(),
            "metadata: GCE metadata 'instance/service-accounts/default/identity' not defined"
        );
        assert_eq!(
            gce_identity_response(503, b"busy\n", now, 0).unwrap_err(),
            "compute: Received 503 `busy`"
        );
        assert!(gce_identity_response(200, b"opaque", now, 0)
            .unwrap_err()
            .contains("not a JWT"));
    }

    #[actix_rt::test]
    async fn gcp_connection_failure_is_reported() {
        // Only loopback: a closed port on 127.0.0.1 (the default host is never contacted here).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = gcp_id_token_from(&addr.to_string(), "command")
            .await
            .unwrap_err();
        let url = gce_identity_url(&addr.to_string(), "command");
        assert!(
            e.starts_with(&format!(
                "google: could not find default credentials: Get \"{url}\": "
            )),
            "{e}"
        );
    }

    #[actix_rt::test]
    async fn gcp_request_carries_the_metadata_flavor_header() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let token = jwt(serde_json::json!({"aud": "my-aud", "exp": now_unix() + 3600}));
        let body = token.clone();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/text\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        let h = gcp_id_token_from(&addr.to_string(), "my-aud")
            .await
            .unwrap();
        let request = server.join().unwrap();
        assert!(request.starts_with(
            "GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=my-aud&format=full HTTP/1.1\r\n"
        ), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("metadata-flavor: google\r\n"),
            "{request}"
        );
        assert_eq!(h.value.expose_secret(), format!("Bearer {token}"));
        let left = h.expires.unwrap() - Instant::now();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3590));
    }

    #[test]
    fn expiry_margin_and_past_tokens() {
        let now = Instant::now();
        assert_eq!(
            expiry_from_unix(1_000 + 3600, now, 1_000),
            now + Duration::from_secs(3590)
        );
        assert_eq!(expiry_from_unix(1_005, now, 1_000), now);
        assert_eq!(expiry_from_unix(10, now, 1_000), now);
    }

    #[test]
    fn claims_summary_is_ordered_and_never_the_token() {
        let t = jwt(serde_json::json!({
            "iss": "https://sts.windows.net/t/", "sub": "s", "aud": ["a", "b"],
            "appid": "app", "oid": "o", "exp": 1, "email": "x@y"
        }));
        let s = jwt_claims_summary(&t, &["iss", "sub", "aud"]);
        assert_eq!(s, "iss=https://sts.windows.net/t/ sub=s aud=a,b");
        assert_eq!(
            jwt_claims_summary(&t, AZURE_LOG_CLAIMS),
            "aud=a,b appid=app iss=https://sts.windows.net/t/ sub=s oid=o"
        );
        let google = jwt_claims_summary(&t, GCP_LOG_CLAIMS);
        assert_eq!(
            google,
            "aud=a,b iss=https://sts.windows.net/t/ sub=s email=x@y"
        );
        assert!(!google.contains(t.split('.').nth(1).unwrap()));
        assert_eq!(
            jwt_claims_summary("opaque-token", &["iss"]),
            "claims unavailable: not a JWT"
        );
        assert_eq!(
            jwt_claims_summary("a.b", &["iss"]),
            "claims unavailable: not a JWT"
        );
    }

    #[test]
    fn error_chain_keeps_causes_and_moves_the_link() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let inner = E("invalid peer certificate: UnknownIssuer", None);
        let mid = E("failed to execute request", Some(Box::new(inner)));
        let top = E(
            "Cred authentication failed. failed to execute request\nTo troubleshoot, visit https://x#w",
            Some(Box::new(mid)),
        );
        assert_eq!(
            error_chain(&top),
            "Cred authentication failed. failed to execute request: invalid peer certificate: \
             UnknownIssuer. To troubleshoot, visit https://x#w"
        );
        let plain = E(
            "AADSTS900144: Required query variable 'resource' is missing.",
            None,
        );
        assert_eq!(error_chain(&plain), plain.0);
    }

    #[test]
    fn combined_message() {
        let e = combined_error("A", "B");
        assert_eq!(
            e.to_string(),
            "failed to obtain ambient credentials: azure err: A. gcp err: B"
        );
    }

    const CAPPED: Duration = Duration::from_secs(24 * 3600 - 10);

    #[test]
    fn expiry_of_a_hostile_exp_is_capped_not_a_panic() {
        // Before the cap, `now + (i64::MAX - now_unix) s` overflowed Instant and panicked.
        let now = Instant::now();
        assert_eq!(expiry_from_unix(i64::MAX, now, 1_000), now + CAPPED);
        assert_eq!(expiry_from_unix(i64::MAX, now, i64::MIN), now + CAPPED);
        assert_eq!(expiry_from_unix(1 << 62, now, 1_000), now + CAPPED);
        assert_eq!(expiry_from_unix(i64::MIN, now, 1_000), now);
        assert_eq!(expiry_from_unix(-5, now, 1_000), now);
        assert_eq!(expiry_from_unix(i64::MIN, now, i64::MAX), now);
    }

    #[test]
    fn gce_token_with_hostile_exp_never_panics() {
        let now = Instant::now();
        let answer = |exp: serde_json::Value| {
            let t = jwt(serde_json::json!({ "aud": "command", "exp": exp }));
            gce_identity_response(200, t.as_bytes(), now, 10_000)
        };
        // i64::MAX: capped at 24 h (panicked before).
        let h = answer(serde_json::json!(i64::MAX)).unwrap();
        assert_eq!(h.expires, Some(now + CAPPED));
        // Negative: already expired, refreshed on the next call.
        let h = answer(serde_json::json!(-1)).unwrap();
        assert_eq!(h.expires, Some(now));
        // 2^63, u64::MAX and 1e300 are no int64 NumericDate (Go's idtoken refuses them too).
        for exp in [
            serde_json::json!(9_223_372_036_854_775_808u64),
            serde_json::json!(u64::MAX),
            serde_json::json!(1e300),
            serde_json::json!("99999999999999999999"),
        ] {
            let e = answer(exp.clone()).unwrap_err();
            assert!(e.contains("not a JWT with exp"), "{exp}: {e}");
        }
    }

    fn clamped(body: &str) -> Option<serde_json::Value> {
        clamp_entra_lifetimes(body.as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn entra_lifetimes_are_clamped_before_azure_identity_sees_them() {
        // i64::MAX reached `now_utc() + Duration::seconds(i64::MAX)` in azure_identity: panic.
        let v = clamped(&format!(
            r#"{{"access_token":"a","expires_in":{},"ext_expires_in":{}}}"#,
            i64::MAX,
            u64::MAX
        ))
        .unwrap();
        assert_eq!(v["expires_in"], 86_400);
        assert_eq!(v["ext_expires_in"], 86_400);
        assert_eq!(v["access_token"], "a");
        let v = clamped(r#"{"access_token":"a","expires_in":9223372036854775808}"#).unwrap();
        assert_eq!(v["expires_in"], 86_400);
        let v = clamped(r#"{"access_token":"a","expires_in":1e300}"#).unwrap();
        assert_eq!(v["expires_in"], 86_400);
        let v = clamped(r#"{"access_token":"a","expires_in":-9223372036854775808}"#).unwrap();
        assert_eq!(v["expires_in"], 0);
        let v = clamped(r#"{"access_token":"a","expires_in":-1e300}"#).unwrap();
        assert_eq!(v["expires_in"], 0);
        let v = clamped(r#"{"access_token":"a","expires_in":3599.9}"#).unwrap();
        assert_eq!(v["expires_in"], 3599);
        // Sane or absent lifetimes, strings and non-JSON are passed on byte for byte.
        assert_eq!(clamped(r#"{"access_token":"a","expires_in":3600}"#), None);
        assert_eq!(
            clamped(r#"{"access_token":"a","expires_in":"1e300"}"#),
            None
        );
        assert_eq!(clamped(r#"{"access_token":"a"}"#), None);
        assert_eq!(clamped("not json"), None);
        assert_eq!(clamped("[1,2]"), None);
    }

    #[actix_rt::test]
    async fn transport_clamps_a_hostile_entra_answer() {
        use azure_core::http::Method;
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let body = format!(
                r#"{{"token_type":"Bearer","expires_in":{},"access_token":"x"}}"#,
                i64::MAX
            );
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).unwrap();
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = AuthorityPathClient {
            inner: reqwest::Client::builder().build().unwrap(),
            prefix: String::new(),
        };
        let url = Url::parse(&format!("http://{addr}/tenant/oauth2/v2.0/token")).unwrap();
        let response = client
            .execute_request(&Request::new(url, Method::Post))
            .await
            .unwrap()
            .try_into_raw_response()
            .await
            .unwrap();
        server.join().unwrap();
        let v: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(v["expires_in"], 86_400);
        assert_eq!(v["access_token"], "x");
    }
}
