//! Black-box tests of the token side: the built-in identity provider (`/_idp`), Bearer tokens on
//! the Command API, token revocation and lifetimes, the GKE metadata server and the Entra token
//! endpoint. Each test starts the real `command-sim` binary on 127.0.0.1:0 (HTTPS, trusting
//! only its tls-ca.pem).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use awc::http::Method;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

const STATUS: &str = "/KeyfactorAPI/Status/Endpoints";
const ENTRA_TENANT: &str = "11111111-2222-3333-4444-555555555555";
const ENTRA_CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const ENTRA_SUBJECT: &str = "99999999-8888-7777-6666-555555555555";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

mod common;

use common::default_config;

struct Sim {
    p: common::SimProcess,
}

impl std::ops::Deref for Sim {
    type Target = common::SimProcess;
    fn deref(&self) -> &common::SimProcess {
        &self.p
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    www_authenticate: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

enum Body<'a> {
    None,
    Form(&'a [(&'a str, &'a str)]),
    Json(Value),
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

impl Sim {
    async fn start(config: Value, args: &[&str]) -> Sim {
        Sim {
            p: common::spawn(&config, args, Duration::from_secs(20)).await,
        }
    }

    async fn default() -> Sim {
        Sim::start(default_config(), &[]).await
    }

    fn base(&self) -> &str {
        self.ready["url"].as_str().expect("url")
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Reply {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base())
        };
        let mut req = self.client.request(method, url);
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut resp = match body {
            Body::None => req.send().await,
            Body::Form(f) => req.send_form(&f).await,
            Body::Json(v) => req.send_json(&v).await,
        }
        .expect("request sent");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (content_type, www_authenticate) = (header("content-type"), header("www-authenticate"));
        let body = resp.body().limit(1 << 20).await.expect("body").to_vec();
        Reply {
            status: resp.status().as_u16(),
            content_type,
            www_authenticate,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Body::None).await
    }

    async fn admin_post(&self, path: &str, body: Option<Value>) -> Reply {
        let body = body.map_or(Body::None, Body::Json);
        self.send(Method::POST, path, &[], body).await
    }

    /// `POST /_idp/token` with HTTP Basic client authentication (RFC 6749 §2.3.1 encoding).
    async fn token_basic(&self, id: &str, secret: &str, form: &[(&str, &str)]) -> Reply {
        let creds = STANDARD.encode(format!("{}:{}", form_enc(id), form_enc(secret)));
        let auth = format!("Basic {creds}");
        self.send(
            Method::POST,
            "/_idp/token",
            &[("authorization", auth.as_str())],
            Body::Form(form),
        )
        .await
    }

    /// `POST /_idp/token` with `client_id`/`client_secret` in the body.
    async fn token_body(&self, id: &str, secret: &str, extra: &[(&str, &str)]) -> Reply {
        let mut form = vec![("client_id", id), ("client_secret", secret)];
        form.extend_from_slice(extra);
        self.send(Method::POST, "/_idp/token", &[], Body::Form(&form))
            .await
    }

    /// A fresh access token of `issuer-client`.
    async fn access_token(&self) -> String {
        let r = self
            .token_basic("issuer-client", "oauth-secret-1", GRANT)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// `GET /Status/Endpoints` with `Authorization: Bearer <token>`.
    async fn status_with(&self, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(
            Method::GET,
            STATUS,
            &[
                ("x-keyfactor-requested-with", "APIClient"),
                ("authorization", auth.as_str()),
            ],
            Body::None,
        )
        .await
    }

    async fn token_requests(&self) -> Vec<Value> {
        let r = self.get("/_sim/token-requests").await;
        assert_eq!(r.status, 200);
        r.json().as_array().expect("array").clone()
    }

    async fn jwks(&self) -> Value {
        let r = self.get("/_idp/jwks").await;
        assert_eq!(r.status, 200);
        r.json()
    }
}

const GRANT: &[(&str, &str)] = &[("grant_type", "client_credentials")];

/// `application/x-www-form-urlencoded` encoding of one component, as Go's `url.QueryEscape`.
fn form_enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Verifies `token` (RS256) against `jwks`; returns (header, claims).
fn verify(token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    let header = b64_json(parts[0]);
    assert_eq!(header["alg"], "RS256");
    let kid = header["kid"].as_str().expect("kid");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("kid in JWKS");
    assert_eq!(key["kty"], "RSA");
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("n");
    let e = URL_SAFE_NO_PAD
        .decode(key["e"].as_str().expect("e"))
        .expect("e");
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    RsaPublicKeyComponents { n, e }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &sig,
        )
        .expect("signature verifies with the JWKS key");
    (header, b64_json(parts[1]))
}

fn oauth_error(r: &Reply) -> (String, String) {
    let v = r.json();
    (
        v["error"].as_str().unwrap_or_default().to_string(),
        v["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[actix_rt::test]
async fn token_endpoint_client_authentication_and_errors() {
    let mut config = default_config();
    config["oauth_clients"]
        .as_array_mut()
        .expect("clients")
        .push(
            json!({"client_id": "odd id:1", "client_secret": "s3 cr:et+%", "role": "IssuerRole"}),
        );
    let sim = Sim::start(config, &[]).await;
    assert!(
        sim.ready.get("gce_metadata").is_none(),
        "no metadata server without the flag"
    );

    // Both styles for an `any` client; the answer has exactly the RFC 6749 fields.
    for r in [
        sim.token_basic("issuer-client", "oauth-secret-1", GRANT)
            .await,
        sim.token_body("issuer-client", "oauth-secret-1", GRANT)
            .await,
        sim.token_basic("odd id:1", "s3 cr:et+%", GRANT).await,
    ] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.content_type.starts_with("application/json"));
        let v = r.json();
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(v.as_object().expect("object").len(), 3, "{v}");
        assert_eq!(
            v["access_token"]
                .as_str()
                .expect("token")
                .split('.')
                .count(),
            3
        );
    }

    // Style refusals, each with the other style working.
    let r = sim
        .token_body("basic-only-client", "oauth-secret-2", GRANT)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_client", "error_description": "client authentication must use HTTP Basic"})
    );
    let r = sim
        .token_basic("basic-only-client", "oauth-secret-2", GRANT)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = sim
        .token_basic("body-only-client", "oauth-secret-3", GRANT)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        oauth_error(&r),
        (
            "invalid_client".into(),
            "client authentication must use the request body".into()
        )
    );
    assert!(r.www_authenticate.starts_with("Basic"));
    let r = sim
        .token_body("body-only-client", "oauth-secret-3", GRANT)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Bad secret, unknown client, no credentials.
    for r in [
        sim.token_basic("issuer-client", "wrong", GRANT).await,
        sim.token_body("issuer-client", "wrong", GRANT).await,
        sim.token_basic("nobody", "x", GRANT).await,
        sim.send(Method::POST, "/_idp/token", &[], Body::Form(GRANT))
            .await,
    ] {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(oauth_error(&r).0, "invalid_client");
    }

    // Grant type and scopes.
    let r = sim
        .token_basic(
            "issuer-client",
            "oauth-secret-1",
            &[("grant_type", "password")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(oauth_error(&r).0, "unsupported_grant_type");
    let r = sim
        .token_basic(
            "scoped-client",
            "oauth-secret-5",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "command.read admin"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(oauth_error(&r).0, "invalid_scope");
    assert!(oauth_error(&r).1.contains("admin"), "{}", r.text());
    let r = sim
        .token_body(
            "scoped-client",
            "oauth-secret-5",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "command.read command.enroll"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The log has every attempt, with the style used and never a secret.
    let log = sim.token_requests().await;
    let text = serde_json::to_string(&log).expect("json");
    assert!(
        !text.contains("oauth-secret") && !text.contains("s3 cr"),
        "{text}"
    );
    let styles: Vec<(String, String, u64)> = log
        .iter()
        .filter(|r| r["endpoint"] == "idp")
        .map(|r| {
            (
                r["client_id"].as_str().unwrap_or_default().to_string(),
                r["auth_style"].as_str().unwrap_or_default().to_string(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(styles.len(), 14, "{styles:?}");
    assert!(styles.contains(&("basic-only-client".into(), "body".into(), 401)));
    assert!(styles.contains(&("body-only-client".into(), "body".into(), 200)));
    assert!(styles.contains(&("odd id:1".into(), "basic".into(), 200)));
    let scoped = log
        .iter()
        .find(|r| r["client_id"] == "scoped-client" && r["status"] == 400)
        .expect("scoped refusal logged");
    assert_eq!(scoped["scope"], "command.read admin");
    assert_eq!(scoped["error"], "invalid_scope");
}

#[actix_rt::test]
async fn jwt_claims_verify_and_bearer_is_accepted() {
    let sim = Sim::default().await;
    let iss = format!("{}/_idp", sim.base());
    let discovery = sim.get("/_idp/.well-known/openid-configuration").await;
    assert_eq!(discovery.status, 200);
    let d = discovery.json();
    assert_eq!(d["issuer"], iss.as_str());
    assert_eq!(d["token_endpoint"], format!("{iss}/token"));
    assert_eq!(d["jwks_uri"], format!("{iss}/jwks"));
    let jwks = sim.jwks().await;

    let r = sim
        .token_body(
            "scoped-client",
            "oauth-secret-5",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "command.read"),
            ],
        )
        .await;
    let (header, c) = verify(r.json()["access_token"].as_str().expect("token"), &jwks);
    assert_eq!(header["typ"], "JWT");
    assert_eq!(c["iss"], iss.as_str());
    for k in ["sub", "client_id", "azp"] {
        assert_eq!(c[k], "scoped-client", "{k}");
    }
    assert_eq!(
        c["aud"], "https://command.example",
        "client default audience"
    );
    assert_eq!(c["scope"], "command.read");
    let iat = c["iat"].as_i64().expect("iat");
    assert_eq!(c["nbf"].as_i64(), Some(iat));
    assert_eq!(c["exp"].as_i64(), Some(iat + 3600));
    assert!((unix_now() - iat as f64).abs() < 60.0);
    assert!(!c["jti"].as_str().unwrap_or_default().is_empty());

    let r = sim
        .token_basic(
            "issuer-client",
            "oauth-secret-1",
            &[
                ("grant_type", "client_credentials"),
                ("audience", "https://aud.example"),
            ],
        )
        .await;
    let token = r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (_, c) = verify(&token, &jwks);
    assert_eq!(c["aud"], "https://aud.example");
    assert!(c.get("scope").is_none());
    let (_, c) = verify(&sim.access_token().await, &jwks);
    assert_eq!(c["aud"], "command");

    // Bearer on the Command API.
    let ok = sim.status_with(&token).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let meta = sim
        .send(
            Method::GET,
            "/KeyfactorAPI/MetadataFields",
            &[
                ("x-keyfactor-requested-with", "APIClient"),
                ("authorization", format!("Bearer {token}").as_str()),
            ],
            Body::None,
        )
        .await;
    assert_eq!(meta.status, 200);
    let requests = sim.get("/_sim/requests").await.json();
    assert!(requests
        .as_array()
        .expect("array")
        .iter()
        .all(|r| r["headers"]["authorization"] == "<redacted>"));

    // A tampered or garbage token: 401 with an empty body.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims = b64_json(&parts[1]);
    claims["sub"] = json!("norole-client");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    for bad in [parts.join("."), "abc.def.ghi".to_string()] {
        let r = sim.status_with(&bad).await;
        assert_eq!(r.status, 401);
        assert!(r.body.is_empty());
        assert!(r.www_authenticate.starts_with("Bearer"), "{r:?}");
    }

    // A valid token whose identity has no role: 403 as for Basic.
    let r = sim
        .token_basic("norole-client", "oauth-secret-4", GRANT)
        .await;
    let norole = r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = sim.status_with(&norole).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.content_type, "application/json; charset=utf-8");
    assert_eq!(
        r.text(),
        r#"{"ErrorCode":"0xA0140002","Message":"User norole-client doesn\u0027t have the required permission"}"#
    );
}

#[actix_rt::test]
async fn expired_and_revoked_tokens_are_refused() {
    let sim = Sim::default().await;
    let r = sim
        .admin_post(
            "/_sim/oauth-clients/nobody/lifetime",
            Some(json!({"secs": 1})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = sim
        .admin_post(
            "/_sim/oauth-clients/issuer-client/lifetime",
            Some(json!({"secs": "x"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = sim
        .admin_post(
            "/_sim/oauth-clients/issuer-client/lifetime",
            Some(json!({"secs": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = sim
        .token_basic("issuer-client", "oauth-secret-1", GRANT)
        .await;
    assert_eq!(r.json()["expires_in"], 1);
    let short = r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let exp = b64_json(short.split('.').nth(1).expect("payload"))["exp"]
        .as_f64()
        .expect("exp");
    // Wait on the clock until exp has passed (bounded), then the token is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while unix_now() < exp {
        assert!(Instant::now() < deadline, "exp did not pass");
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    let r = sim.status_with(&short).await;
    assert_eq!(r.status, 401, "expired token");
    assert!(r.body.is_empty());

    // Back to an hour; revoke makes every earlier token fail, new ones work.
    sim.admin_post(
        "/_sim/oauth-clients/issuer-client/lifetime",
        Some(json!({"secs": 3600})),
    )
    .await;
    let before = sim.access_token().await;
    assert_eq!(sim.status_with(&before).await.status, 200);
    let r = sim.admin_post("/_sim/tokens/revoke", None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked"].as_u64().expect("count") >= 2);
    assert_eq!(sim.status_with(&before).await.status, 401, "revoked");
    let after = sim.access_token().await;
    assert_eq!(sim.status_with(&after).await.status, 200, "new token works");
}

/// A lifetime beyond i64 (2^63 s) is answered verbatim as `expires_in` (clients must cope),
/// the token itself still works, and Bearer calls are attributed to the client in the request log.
#[actix_rt::test]
async fn huge_lifetime_is_answered_verbatim_and_bearer_callers_are_recorded() {
    const HUGE: u64 = 1 << 63;
    let sim = Sim::default().await;
    let r = sim
        .admin_post(
            "/_sim/oauth-clients/issuer-client/lifetime",
            Some(json!({ "secs": HUGE })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_lifetime_secs"].as_u64(), Some(HUGE));
    let r = sim
        .token_basic("issuer-client", "oauth-secret-1", GRANT)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("\"expires_in\":9223372036854775808"),
        "expires_in exactly 2^63: {}",
        r.text()
    );
    let token = r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let exp = b64_json(token.split('.').nth(1).expect("payload"))["exp"]
        .as_i64()
        .expect("exp is an integer");
    assert!(exp > 1 << 61, "exp saturates far in the future: {exp}");
    assert_eq!(sim.status_with(&token).await.status, 200, "token accepted");
    let requests = sim.get("/_sim/requests").await.json();
    let last = requests
        .as_array()
        .and_then(|a| a.last())
        .expect("a record");
    assert_eq!(last["caller"], "issuer-client");
    assert_eq!(last["headers"]["authorization"], "<redacted>");

    // Back to normal.
    sim.admin_post(
        "/_sim/oauth-clients/issuer-client/lifetime",
        Some(json!({"secs": 3600})),
    )
    .await;
    let r = sim
        .token_basic("issuer-client", "oauth-secret-1", GRANT)
        .await;
    assert_eq!(r.json()["expires_in"], 3600);
}

#[actix_rt::test]
async fn gce_metadata_server_identity_tokens() {
    let sim = Sim::start(default_config(), &["--gce-metadata-listen", "127.0.0.1:0"]).await;
    let gce = sim.ready["gce_metadata"]
        .as_str()
        .expect("ready.json has gce_metadata")
        .to_string();
    assert!(gce.starts_with("127.0.0.1:"), "{gce}");
    let identity = |aud: &str| {
        format!(
            "http://{gce}/computeMetadata/v1/instance/service-accounts/default/identity?audience={aud}&format=full"
        )
    };
    let flavor = [("Metadata-Flavor", "Google")];

    let r = sim
        .send(Method::GET, &identity("command"), &[], Body::None)
        .await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Metadata-Flavor"), "{}", r.text());

    let r = sim
        .send(Method::GET, &identity("command"), &flavor, Body::None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.content_type.starts_with("text/plain"));
    let token = r.text();
    let (_, c) = verify(&token, &sim.jwks().await);
    assert_eq!(c["iss"], "https://accounts.google.com");
    assert_eq!(c["aud"], "command");
    assert_eq!(c["sub"], "112233445566778899");
    assert_eq!(c["email"], "command-issuer@project.iam.gserviceaccount.com");
    assert_eq!(
        c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
        3600
    );
    let r = sim.status_with(&token).await;
    assert_eq!(r.status, 200, "Google subject maps to IssuerRole");

    let r = sim
        .send(
            Method::GET,
            &identity("https%3A%2F%2Fcmd.example%2Fx"),
            &flavor,
            Body::None,
        )
        .await;
    let (_, c) = verify(&r.text(), &sim.jwks().await);
    assert_eq!(c["aud"], "https://cmd.example/x");
    let r = sim
        .send(Method::GET, &identity(""), &flavor, Body::None)
        .await;
    assert_eq!(r.status, 400);
    // The metadata listener serves nothing of Command.
    let r = sim
        .send(
            Method::GET,
            &format!("http://{gce}{STATUS}"),
            &flavor,
            Body::None,
        )
        .await;
    assert_eq!(r.status, 404);

    let log: Vec<Value> = sim
        .token_requests()
        .await
        .into_iter()
        .filter(|r| r["client_id"] == "gce")
        .collect();
    let statuses: Vec<u64> = log.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [403, 200, 200, 400]);
    assert_eq!(log[1]["audience"], "command");

    // Not bound to a Google service account: Go's "not defined" 404.
    let mut config = default_config();
    config["gce"]["bound"] = json!(false);
    let unbound = Sim::start(config, &["--gce-metadata-listen", "127.0.0.1:0"]).await;
    let gce = unbound.ready["gce_metadata"]
        .as_str()
        .expect("gce")
        .to_string();
    let r = unbound
        .send(
            Method::GET,
            &format!("http://{gce}/computeMetadata/v1/instance/service-accounts/default/identity?audience=command&format=full"),
            &flavor,
            Body::None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(
        r.text()
            .contains("'instance/service-accounts/default/identity' not defined"),
        "{}",
        r.text()
    );
}

#[actix_rt::test]
async fn entra_workload_identity_tokens() {
    let sim = Sim::default().await;
    let token_path = format!("/_entra/{ENTRA_TENANT}/oauth2/v2.0/token");
    let scope = format!("api://{ENTRA_CLIENT}/.default");
    let entra = |scope: &str, assertion: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", ENTRA_CLIENT.to_string()),
            ("scope", scope.to_string()),
            ("client_assertion_type", ASSERTION_TYPE.to_string()),
            ("client_assertion", assertion.to_string()),
        ]
    };
    let post = |form: Vec<(&'static str, String)>| {
        let sim = &sim;
        let token_path = token_path.clone();
        async move {
            let pairs: Vec<(&str, &str)> = form
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            sim.send(Method::POST, &token_path, &[], Body::Form(&pairs))
                .await
        }
    };

    let meta = sim
        .get(&format!(
            "/_entra/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .await;
    assert_eq!(meta.status, 200);
    assert_eq!(
        meta.json()["token_endpoint"],
        format!("{}{token_path}", sim.base())
    );
    assert_eq!(
        meta.json()["issuer"],
        format!("https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0")
    );

    let r = post(entra(&scope, "sim-federated-token")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["ext_expires_in"], 3600);
    let token = v["access_token"].as_str().expect("token").to_string();
    let (_, c) = verify(&token, &sim.jwks().await);
    assert_eq!(
        c["iss"],
        format!("https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0")
    );
    assert_eq!(c["aud"], format!("api://{ENTRA_CLIENT}"));
    assert_eq!(c["appid"], ENTRA_CLIENT);
    assert_eq!(c["azp"], ENTRA_CLIENT);
    assert_eq!(c["sub"], ENTRA_SUBJECT);
    assert_eq!(c["oid"], ENTRA_SUBJECT);
    assert_eq!(c["tid"], ENTRA_TENANT);
    let r = sim.status_with(&token).await;
    assert_eq!(r.status, 200, "Entra subject maps to IssuerRole");

    let description = |r: &Reply| oauth_error(r).1;
    let r = post(entra("", "sim-federated-token")).await;
    assert_eq!(r.status, 400);
    assert!(
        description(&r).starts_with("AADSTS900144: "),
        "{}",
        r.text()
    );
    assert!(
        description(&r).contains("Required query variable 'resource' is missing"),
        "{}",
        r.text()
    );
    let r = post(entra("api://unknown-app/.default", "sim-federated-token")).await;
    assert_eq!(r.status, 400);
    assert!(
        description(&r).starts_with("AADSTS500011: "),
        "{}",
        r.text()
    );
    let r = post(entra(
        &format!("api://{ENTRA_CLIENT}/read"),
        "sim-federated-token",
    ))
    .await;
    assert_eq!(r.status, 400);
    assert!(
        description(&r).starts_with("AADSTS1002012: "),
        "{}",
        r.text()
    );
    let r = post(entra(&scope, "another-token")).await;
    assert_eq!(r.status, 401);
    assert_eq!(oauth_error(&r).0, "invalid_client");
    assert!(
        description(&r).starts_with("AADSTS700213: "),
        "{}",
        r.text()
    );
    let r = sim
        .send(
            Method::POST,
            "/_entra/other-tenant/oauth2/v2.0/token",
            &[],
            Body::Form(&[("grant_type", "client_credentials")]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(description(&r).starts_with("AADSTS90002: "), "{}", r.text());

    let log: Vec<Value> = sim
        .token_requests()
        .await
        .into_iter()
        .filter(|r| r["endpoint"] == "entra")
        .collect();
    assert_eq!(log.len(), 6);
    assert!(log[..5].iter().all(|r| r["client_id"] == ENTRA_CLIENT));
    let statuses: Vec<u64> = log.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [200, 400, 400, 400, 401, 400]);
    assert!(!serde_json::to_string(&log)
        .expect("json")
        .contains("sim-federated-token"));
}
