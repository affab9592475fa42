//! Fault injection (`/_sim/faults`) against the real `command-sim` binary over HTTPS: every kind
//! is observed from the client side (status, headers, timing, connection and body errors).

use std::time::{Duration, Instant};

use awc::http::Method;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const REQUESTED_WITH: (&str, &str) = ("x-keyfactor-requested-with", "APIClient");
const ISSUER: (&str, &str) = ("command-issuer", "sim-password-1");

mod common;

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
    retry_after: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How far a request got.
#[derive(Debug)]
enum Outcome {
    /// No response head (connection error).
    Connection(String),
    /// Head received, body broken.
    Body(u16, String),
    /// Complete answer.
    Done(Reply),
}

impl Outcome {
    fn done(self) -> Reply {
        match self {
            Outcome::Done(r) => r,
            other => panic!("expected a complete answer, got {other:?}"),
        }
    }
}

impl Sim {
    async fn start() -> Sim {
        Sim {
            p: common::spawn(&common::default_config(), &[], Duration::from_secs(10)).await,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<String>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Outcome {
        let mut req = self.client.request(method, format!("{}{path}", self.url()));
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a));
        }
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let sent = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Connection(e.to_string()),
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        let status = resp.status().as_u16();
        match resp.body().limit(1 << 20).await {
            Ok(b) => Outcome::Done(Reply {
                status,
                content_type,
                retry_after,
                body: b.to_vec(),
            }),
            Err(e) => Outcome::Body(status, e.to_string()),
        }
    }

    fn basic() -> Option<String> {
        use base64::Engine;
        let raw = format!("{}:{}", ISSUER.0, ISSUER.1);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    async fn status_endpoints(&self, auth: Option<String>) -> Outcome {
        self.send(
            Method::GET,
            "/KeyfactorAPI/Status/Endpoints",
            auth,
            &[REQUESTED_WITH],
            None,
        )
        .await
    }

    async fn enroll(&self, csr_pem: &str) -> Outcome {
        let body = json!({
            "CSR": csr_pem, "EnrollmentPatternId": 1, "IncludeChain": true,
            "Metadata": {}, "SANs": {}, "Timestamp": "2026-06-03T12:00:00Z"
        });
        self.send(
            Method::POST,
            "/KeyfactorAPI/Enrollment/CSR",
            Self::basic(),
            &[
                REQUESTED_WITH,
                ("x-certificateformat", "PEM"),
                ("content-type", "application/json"),
            ],
            Some(body.to_string()),
        )
        .await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let ct = [("content-type", "application/json")];
        self.send(method, path, None, &ct, body.map(|b| b.to_string()))
            .await
            .done()
    }

    async fn set_faults(&self, rules: Value) {
        let r = self.admin(Method::POST, "/_sim/faults", Some(rules)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    async fn fired(&self) -> Vec<u64> {
        let r = self.admin(Method::GET, "/_sim/faults", None).await;
        r.json()["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| r["fired"].as_u64().expect("fired"))
            .collect()
    }

    async fn enrollments(&self, sha: &str) -> u64 {
        let path = format!("/_sim/enrollments/count?csr_sha256={sha}");
        self.admin(Method::GET, &path, None).await.json()["count"]
            .as_u64()
            .expect("count")
    }

    async fn token(&self) -> String {
        let r = self
            .send(
                Method::POST,
                "/_idp/token",
                None,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(
                    "grant_type=client_credentials&client_id=issuer-client&client_secret=oauth-secret-1"
                        .into(),
                ),
            )
            .await
            .done();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }
}

fn csr(cn: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![cn.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let req = params.serialize_request(&key).expect("csr");
    let sha = Sha256::digest(req.der().as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (req.pem().expect("pem"), sha)
}

#[actix_rt::test]
async fn status_faults_count_retry_after_and_delete() {
    let sim = Sim::start().await;
    // Bad rules are refused and leave the set empty.
    let r = sim
        .admin(
            Method::POST,
            "/_sim/faults",
            Some(json!([{"target": "api", "kind": "status"}])),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(sim.fired().await.is_empty());

    sim.set_faults(
        json!([{"target": "api", "path": "/enrollment/csr", "kind": "status",
                           "status": 503, "count": 2}]),
    )
    .await;
    // Other paths are not affected.
    assert_eq!(sim.status_endpoints(Sim::basic()).await.done().status, 200);
    let (pem, sha) = csr("faults-503.example.com");
    for _ in 0..2 {
        let r = sim.enroll(&pem).await.done();
        assert_eq!(r.status, 503);
        assert!(r.content_type.starts_with("application/json"));
        assert_eq!(r.json()["ErrorCode"], "0xA0B000F1");
    }
    let r = sim.enroll(&pem).await.done();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sim.enrollments(&sha).await, 1, "503s must not be recorded");
    assert_eq!(sim.fired().await, vec![2]);

    // 429 carries Retry-After; the token endpoint can fail on its own.
    sim.set_faults(json!({"rules": [
        {"target": "api", "kind": "status", "status": 429, "retry_after_secs": 2, "count": 1},
        {"target": "token", "path": "/_idp/token", "kind": "status", "status": 503, "count": 1}
    ]}))
    .await;
    let r = sim.status_endpoints(Sim::basic()).await.done();
    assert_eq!((r.status, r.retry_after.as_str()), (429, "2"));
    let r = sim
        .send(
            Method::POST,
            "/_idp/token",
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some("grant_type=client_credentials".into()),
        )
        .await
        .done();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert_eq!(sim.fired().await, vec![1, 1]);

    // DELETE clears; an every-Nth rule fires on every second request.
    sim.set_faults(json!([{"target": "any", "kind": "status", "status": 500, "every": 2}]))
        .await;
    assert_eq!(sim.status_endpoints(Sim::basic()).await.done().status, 200);
    assert_eq!(sim.status_endpoints(Sim::basic()).await.done().status, 500);
    let r = sim.admin(Method::DELETE, "/_sim/faults", None).await;
    assert_eq!(r.status, 200);
    assert!(sim.fired().await.is_empty());
    for _ in 0..2 {
        assert_eq!(sim.status_endpoints(Sim::basic()).await.done().status, 200);
    }
}

#[actix_rt::test]
async fn latency_slow_body_and_non_json() {
    let sim = Sim::start().await;
    let delay = Duration::from_millis(300);
    sim.set_faults(
        json!([{"target": "api", "path": "/Status", "kind": "latency",
                           "latency_ms": 300, "count": 1}]),
    )
    .await;
    let t = Instant::now();
    let r = sim.status_endpoints(Sim::basic()).await.done();
    assert!(t.elapsed() >= delay, "latency {:?}", t.elapsed());
    assert_eq!(r.status, 200);
    r.json();

    sim.set_faults(json!([{"target": "api", "kind": "slow_body", "latency_ms": 300, "count": 1}]))
        .await;
    let t = Instant::now();
    let r = sim.status_endpoints(Sim::basic()).await.done();
    assert!(t.elapsed() >= delay, "slow body {:?}", t.elapsed());
    assert_eq!(r.status, 200);
    assert!(r.json().is_array(), "slow body is the complete answer");

    sim.set_faults(json!([{"target": "api", "kind": "non_json", "count": 1}]))
        .await;
    let r = sim.status_endpoints(Sim::basic()).await.done();
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    assert!(String::from_utf8_lossy(&r.body).starts_with("<html>"));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert_eq!(sim.fired().await, vec![1]);
}

#[actix_rt::test]
async fn reset_and_truncate_break_the_client() {
    let sim = Sim::start().await;
    sim.set_faults(
        json!([{"target": "api", "path": "/Enrollment/CSR", "kind": "reset",
                           "count": 1}]),
    )
    .await;
    let (pem, sha) = csr("faults-reset.example.com");
    match sim.enroll(&pem).await {
        Outcome::Connection(e) => eprintln!("reset seen by the client as: {e}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert_eq!(
        sim.enrollments(&sha).await,
        0,
        "reset must not run the endpoint"
    );
    assert_eq!(sim.enroll(&pem).await.done().status, 200);
    assert_eq!(sim.enrollments(&sha).await, 1);

    sim.set_faults(json!([{"target": "api", "kind": "truncate", "count": 1}]))
        .await;
    match sim.status_endpoints(Sim::basic()).await {
        Outcome::Body(status, e) => {
            assert_eq!(status, 200);
            eprintln!("truncate seen by the client as: {e}");
        }
        other => panic!("expected a body error, got {other:?}"),
    }
    assert_eq!(sim.status_endpoints(Sim::basic()).await.done().status, 200);
    assert_eq!(sim.fired().await, vec![1]);
    let log = sim.admin(Method::GET, "/_sim/requests", None).await.json();
    let faults: Vec<&str> = log
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["fault"].as_str())
        .collect();
    assert_eq!(faults, vec!["reset", "truncate"]);
}

#[actix_rt::test]
async fn expire_tokens_invalidates_earlier_bearer_tokens() {
    let sim = Sim::start().await;
    let old = Some(format!("Bearer {}", sim.token().await));
    assert_eq!(sim.status_endpoints(old.clone()).await.done().status, 200);
    sim.set_faults(json!([{"target": "api", "kind": "expire_tokens", "count": 1}]))
        .await;
    assert_eq!(sim.status_endpoints(old.clone()).await.done().status, 401);
    assert_eq!(sim.fired().await, vec![1]);
    assert_eq!(
        sim.status_endpoints(old).await.done().status,
        401,
        "stays invalid"
    );
    let new = Some(format!("Bearer {}", sim.token().await));
    assert_eq!(
        sim.status_endpoints(new).await.done().status,
        200,
        "rule spent"
    );
}

impl Sim {
    /// Enrolls `csr_pem` with `Controller-Reconcile-Id` = `op`, as the controller does with
    /// SupportsMetadata.
    async fn enroll_with_op(&self, csr_pem: &str, op: &str) -> Outcome {
        let body = json!({
            "CSR": csr_pem, "EnrollmentPatternId": 1, "IncludeChain": true,
            "Metadata": {"Controller-Reconcile-Id": op}, "SANs": {},
            "Timestamp": "2026-06-03T12:00:00Z"
        });
        self.send(
            Method::POST,
            "/KeyfactorAPI/Enrollment/CSR",
            Self::basic(),
            &[
                REQUESTED_WITH,
                ("x-certificateformat", "PEM"),
                ("content-type", "application/json"),
            ],
            Some(body.to_string()),
        )
        .await
    }

    /// `GET /Certificates?pq.queryString=Controller-Reconcile-Id -eq "op"`: the ids found.
    async fn find_by_op(&self, op: &str) -> Vec<i64> {
        let path = format!(
            "/KeyfactorAPI/Certificates?pq.queryString=Controller-Reconcile-Id%20-eq%20%22{op}%22"
        );
        let r = self
            .send(Method::GET, &path, Self::basic(), &[REQUESTED_WITH], None)
            .await
            .done();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["Id"].as_i64().expect("Id"))
            .collect()
    }

    /// `POST /Certificates/Download` of `id`: status and the PEM (empty unless 200).
    async fn download(&self, id: i64) -> (u16, String) {
        let r = self
            .send(
                Method::POST,
                "/KeyfactorAPI/Certificates/Download",
                Self::basic(),
                &[
                    REQUESTED_WITH,
                    ("x-certificateformat", "PEM"),
                    ("content-type", "application/json"),
                ],
                Some(json!({"CertID": id, "IncludeChain": false}).to_string()),
            )
            .await
            .done();
        if r.status != 200 {
            return (r.status, String::new());
        }
        use base64::Engine;
        let content = r.json()["Content"].as_str().expect("Content").to_string();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(content)
            .expect("base64");
        (200, String::from_utf8(pem).expect("PEM"))
    }

    /// The enrollment records of one CSR.
    async fn records(&self, sha: &str) -> Vec<Value> {
        let all = self
            .admin(Method::GET, "/_sim/enrollments", None)
            .await
            .json();
        all.as_array()
            .expect("records")
            .iter()
            .filter(|r| r["csr_sha256"] == sha)
            .cloned()
            .collect()
    }
}

#[actix_rt::test]
async fn complete_then_status_enrolls_and_answers_a_gateway_error() {
    let sim = Sim::start().await;
    // Refused without a status, and complete_late's fields do not belong to it.
    for bad in [
        json!([{"target": "api", "kind": "complete_then_status"}]),
        json!([{"target": "api", "kind": "complete_then_status", "status": 504, "complete_after_ms": 5}]),
    ] {
        let r = sim
            .admin(Method::POST, "/_sim/faults", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    sim.set_faults(json!([{"target": "api", "path": "/Enrollment/CSR",
        "kind": "complete_then_status", "status": 504, "count": 1}]))
        .await;
    let (pem, sha) = csr("complete-504.example.com");
    let r = sim.enroll_with_op(&pem, "op-504").await.done();
    assert_eq!(r.status, 504);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    assert!(String::from_utf8_lossy(&r.body).contains("504 Gateway Timeout"));
    // Command did the work: one enrollment, issued, findable by its metadata and downloadable.
    let records = sim.records(&sha).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["disposition"], "ISSUED");
    assert_eq!(records[0]["fault"], "complete_then_status");
    assert!(records[0]["completes_at"].is_null());
    let ids = sim.find_by_op("op-504").await;
    assert_eq!(ids, vec![records[0]["keyfactor_id"].as_i64().expect("id")]);
    let (status, leaf) = sim.download(ids[0]).await;
    assert_eq!(status, 200);
    assert_eq!(
        leaf,
        records[0]["certificate"].as_str().expect("certificate")
    );
    // Spent: the next enrollment is answered normally.
    let (pem2, sha2) = csr("complete-504-next.example.com");
    assert_eq!(
        sim.enroll_with_op(&pem2, "op-next").await.done().status,
        200
    );
    assert_eq!(sim.enrollments(&sha2).await, 1);
    assert_eq!(sim.fired().await, vec![1]);
    let log = sim.admin(Method::GET, "/_sim/requests", None).await.json();
    let enrolls: Vec<(u64, Option<&str>)> = log
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["path"] == "/KeyfactorAPI/Enrollment/CSR")
        .map(|r| (r["status"].as_u64().expect("status"), r["fault"].as_str()))
        .collect();
    assert_eq!(
        enrolls,
        vec![(504, Some("complete_then_status")), (200, None)]
    );
}

#[actix_rt::test]
async fn complete_late_finishes_after_the_client_gave_up() {
    // The client gives up after 1 s; Command finishes 1.5 s after the request arrived and
    // would answer at 2.5 s.
    let sim = Sim {
        p: common::spawn(&common::default_config(), &[], Duration::from_secs(1)).await,
    };
    for bad in [
        json!([{"target": "api", "kind": "complete_late"}]),
        json!([{"target": "api", "kind": "complete_late", "complete_after_ms": 60001}]),
        json!([{"target": "api", "kind": "latency", "latency_ms": 1, "drop_answer": true}]),
    ] {
        let r = sim
            .admin(Method::POST, "/_sim/faults", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    sim.set_faults(
        json!([{"target": "api", "path": "/Enrollment/CSR", "kind": "complete_late",
        "complete_after_ms": 1500, "latency_ms": 2500, "count": 1}]),
    )
    .await;
    let (pem, sha) = csr("complete-late.example.com");
    let sent = Instant::now();
    match sim.enroll_with_op(&pem, "op-late").await {
        Outcome::Connection(e) => eprintln!("the late answer seen by the client as: {e}"),
        other => panic!("expected the client to time out, got {other:?}"),
    }
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "checked before completion"
    );
    // Recorded (it counts as an enrollment) but not finished: nothing to find or download.
    let records = sim.records(&sha).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["fault"], "complete_late");
    assert!(records[0]["completes_at"].is_string());
    let id = records[0]["keyfactor_id"].as_i64().expect("id");
    assert!(sim.find_by_op("op-late").await.is_empty());
    assert_eq!(sim.download(id).await.0, 404);
    actix_rt::time::sleep_until((sent + Duration::from_millis(1600)).into()).await;
    assert_eq!(sim.find_by_op("op-late").await, vec![id]);
    let (status, leaf) = sim.download(id).await;
    assert_eq!(status, 200);
    assert_eq!(
        leaf,
        records[0]["certificate"].as_str().expect("certificate")
    );
    assert_eq!(sim.enrollments(&sha).await, 1);
    assert_eq!(sim.fired().await, vec![1]);

    // Or the connection is closed at the answer's time, after Command finished.
    sim.set_faults(
        json!([{"target": "api", "path": "/Enrollment/CSR", "kind": "complete_late",
        "complete_after_ms": 200, "latency_ms": 400, "drop_answer": true, "count": 1}]),
    )
    .await;
    let (pem, sha) = csr("complete-late-dropped.example.com");
    let sent = Instant::now();
    match sim.enroll_with_op(&pem, "op-dropped").await {
        Outcome::Connection(e) => eprintln!("the dropped answer seen by the client as: {e}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(1),
        "dropped after {waited:?}"
    );
    assert_eq!(sim.find_by_op("op-dropped").await.len(), 1);
    assert_eq!(sim.enrollments(&sha).await, 1);
    assert_eq!(sim.fired().await, vec![1]);
    // Spent: answered at once.
    let (pem, _) = csr("complete-late-next.example.com");
    assert_eq!(sim.enroll_with_op(&pem, "op-next").await.done().status, 200);
}
