//! Black-box tests: start the real `command-sim` binary on 127.0.0.1:0, wait for ready.json and
//! talk HTTPS to it with awc, trusting only the simulator's tls-ca.pem.

use std::time::Duration;

use awc::http::Method;
use base64::Engine;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const REQUESTED_WITH: (&str, &str) = ("x-keyfactor-requested-with", "APIClient");
const ISSUER: (&str, &str) = ("command-issuer", "sim-password-1");

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

struct Reply {
    status: u16,
    content_type: String,
    product_version: String,
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

    fn error_code(&self) -> String {
        self.json()["ErrorCode"].as_str().unwrap_or("").to_string()
    }
}

impl Sim {
    async fn start() -> Sim {
        Sim::start_with(default_config()).await
    }

    async fn start_with(config: Value) -> Sim {
        Sim {
            p: common::spawn(&config, &[], Duration::from_secs(20)).await,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.ready["url"].as_str().expect("url"), path)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<(&str, &str)>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some((u, p)) = user {
            req = req.basic_auth(u, p);
        }
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .expect("request sent");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header("content-type");
        let product_version = header("x-keyfactor-product-version");
        let status = resp.status().as_u16();
        let body = resp.body().limit(16 << 20).await.expect("body").to_vec();
        Reply {
            status,
            content_type,
            product_version,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            Method::GET,
            path,
            Some(ISSUER),
            &[REQUESTED_WITH, ("x-keyfactor-api-version", "1")],
            None,
        )
        .await
    }

    async fn enroll_as(&self, user: (&str, &str), body: &Value) -> Reply {
        self.send(
            Method::POST,
            "/KeyfactorAPI/Enrollment/CSR",
            Some(user),
            &[
                REQUESTED_WITH,
                ("x-keyfactor-api-version", "1"),
                ("x-certificateformat", "PEM"),
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(body.to_string()),
        )
        .await
    }

    async fn enroll(&self, body: &Value) -> Reply {
        self.enroll_as(ISSUER, body).await
    }

    async fn admin(&self, method: Method, path: &str) -> Value {
        let reply = self.send(method, path, None, &[], None).await;
        assert_eq!(reply.status, 200, "admin {path}");
        reply.json()
    }
}

fn csr(cn: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec![cn.to_string(), "10.9.8.7".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let req = params.serialize_request(&key).expect("csr");
    let sha = Sha256::digest(req.der().as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (req.pem().expect("pem"), sha)
}

fn pattern_body(csr_pem: &str) -> Value {
    json!({
        "CSR": csr_pem,
        "CertificateAuthority": "",
        "EnrollmentPatternId": 1,
        "IncludeChain": true,
        "Metadata": {"Issuer-Name": "issuer-sample", "Controller-Kind": "issuer"},
        "OwnerRoleId": null,
        "OwnerRoleName": null,
        "SANs": {},
        "Template": null,
        "Timestamp": "2026-06-03T12:00:00.123456789Z"
    })
}

fn template_body(csr_pem: &str, template: &str, ca: &str) -> Value {
    json!({
        "CSR": csr_pem,
        "CertificateAuthority": ca,
        "EnrollmentPatternId": null,
        "IncludeChain": true,
        "Metadata": {},
        "OwnerRoleId": null,
        "OwnerRoleName": null,
        "SANs": {},
        "Template": template,
        "Timestamp": "2026-06-03T12:00:00Z"
    })
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

#[actix_rt::test]
async fn unknown_paths_are_404_and_base_path_is_case_insensitive() {
    let sim = Sim::start().await;
    assert_eq!(sim.get("/KeyfactorAPI/NoSuchThing").await.status, 404);
    assert_eq!(sim.get("/OtherAPI/Status/Endpoints").await.status, 404);
    assert_eq!(sim.get("/").await.status, 404);

    let reply = sim.get("/keyfactorapi/status/endpoints").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json; charset=utf-8");
    assert_eq!(reply.product_version, "25.1.1.0");
    let list: Vec<String> = serde_json::from_value(reply.json()).expect("string array");
    assert_eq!(
        list,
        vec![
            "GET /Status/Endpoints",
            "GET /MetadataFields",
            "POST /Enrollment/CSR",
            "GET /EnrollmentPatterns",
            "GET /Workflow/Certificates/{id}",
            "GET /Certificates",
            "POST /Certificates/Download"
        ]
    );
    // Domain user with `1.0` and no api-version header at all.
    for version in [Some("1.0"), None] {
        let mut headers = vec![REQUESTED_WITH];
        if let Some(v) = version {
            headers.push(("x-keyfactor-api-version", v));
        }
        let reply = sim
            .send(
                Method::GET,
                "/KEYFACTORAPI/Status/Endpoints",
                Some(("CORP\\issuer", "sim-password-2")),
                &headers,
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "api version {version:?}");
    }
}

#[actix_rt::test]
async fn auth_failures_401_and_403() {
    let sim = Sim::start().await;
    let path = "/KeyfactorAPI/Status/Endpoints";
    for user in [
        None,
        Some(("command-issuer", "wrong")),
        Some(("nobody", "x")),
    ] {
        let reply = sim
            .send(Method::GET, path, user, &[REQUESTED_WITH], None)
            .await;
        assert_eq!(reply.status, 401, "{user:?}");
        assert!(reply.body.is_empty(), "401 body must be empty");
    }
    let reply = sim
        .send(
            Method::GET,
            path,
            None,
            &[REQUESTED_WITH, ("authorization", "Bearer abc.def.ghi")],
            None,
        )
        .await;
    assert_eq!(reply.status, 401);

    let reply = sim
        .send(
            Method::GET,
            path,
            Some(("norole", "sim-password-3")),
            &[REQUESTED_WITH],
            None,
        )
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.content_type, "application/json; charset=utf-8");
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        r#"{"ErrorCode":"0xA0140002","Message":"User norole doesn\u0027t have the required permission"}"#
    );

    // A role without /metadata/types/read/ may call Status/Endpoints but not MetadataFields.
    let nometa = Some(("nometadata", "sim-password-4"));
    let ok = sim
        .send(Method::GET, path, nometa, &[REQUESTED_WITH], None)
        .await;
    assert_eq!(ok.status, 200);
    let denied = sim
        .send(
            Method::GET,
            "/KeyfactorAPI/MetadataFields",
            nometa,
            &[REQUESTED_WITH],
            None,
        )
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_code(), "0xA0140002");
}

#[actix_rt::test]
async fn common_headers_are_enforced() {
    let sim = Sim::start().await;
    let path = "/KeyfactorAPI/Status/Endpoints";
    let missing = sim.send(Method::GET, path, Some(ISSUER), &[], None).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error_code(), "0xA0B00001");
    assert!(missing.json()["Message"]
        .as_str()
        .unwrap_or("")
        .contains("x-keyfactor-requested-with"));

    let bad_version = sim
        .send(
            Method::GET,
            path,
            Some(ISSUER),
            &[REQUESTED_WITH, ("x-keyfactor-api-version", "2.0")],
            None,
        )
        .await;
    assert_eq!(bad_version.status, 400);
    assert_eq!(bad_version.error_code(), "0xA0B00002");

    let (pem, _) = csr("hdr.example.com");
    let body = pattern_body(&pem).to_string();
    for (format, code) in [(None, "0xA0B00003"), (Some("DER"), "0xA0B00003")] {
        let mut headers = vec![REQUESTED_WITH, ("content-type", "application/json")];
        if let Some(f) = format {
            headers.push(("x-certificateformat", f));
        }
        let reply = sim
            .send(
                Method::POST,
                "/KeyfactorAPI/Enrollment/CSR",
                Some(ISSUER),
                &headers,
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.status, 400, "format {format:?}");
        assert_eq!(reply.error_code(), code);
    }
}

#[actix_rt::test]
async fn metadata_fields_are_paged_by_display_order() {
    let sim = Sim::start().await;
    let seven = [
        "Controller-Namespace",
        "Controller-Kind",
        "Controller-Resource-Group-Name",
        "Issuer-Name",
        "Issuer-Namespace",
        "Controller-Reconcile-Id",
        "Certificate-Signing-Request-Namespace",
    ];
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|f| f["Name"].as_str().expect("Name always present").to_string())
            .collect()
    };
    let page1 = sim.get("/KeyfactorAPI/MetadataFields").await;
    assert_eq!(page1.status, 200);
    let page1 = page1.json();
    assert_eq!(page1.as_array().map(Vec::len), Some(50));
    let orders: Vec<i64> = page1
        .as_array()
        .expect("array")
        .iter()
        .map(|f| f["DisplayOrder"].as_i64().expect("DisplayOrder"))
        .collect();
    assert!(orders.windows(2).all(|w| w[0] <= w[1]), "sorted ascending");
    let first = &page1[0];
    for key in [
        "Id",
        "Name",
        "Description",
        "DataType",
        "Hint",
        "Validation",
        "Enrollment",
        "Message",
        "Options",
        "DefaultValue",
        "DisplayOrder",
        "CaseSensitive",
        "ExemptFromActionedCount",
    ] {
        assert!(first.get(key).is_some(), "field object has {key}");
    }
    let page2 = sim
        .get("/KeyfactorAPI/MetadataFields?PageReturned=2&ReturnLimit=50")
        .await
        .json();
    let (n1, n2) = (names(&page1), names(&page2));
    let on1 = seven.iter().filter(|s| n1.iter().any(|n| n == *s)).count();
    let on2 = seven.iter().filter(|s| n2.iter().any(|n| n == *s)).count();
    assert!(on1 > 0 && on1 < 7, "some but not all on page 1 ({on1})");
    assert_eq!(on1 + on2, 7, "the rest on page 2");

    let one = sim
        .get("/KeyfactorAPI/MetadataFields?QueryString=Name%20-eq%20%22issuer-name%22")
        .await
        .json();
    assert_eq!(names(&one), vec!["Issuer-Name"]);
    assert_eq!(one[0]["DataType"], 1);

    let desc = sim
        .get("/KeyfactorAPI/MetadataFields?SortAscending=1&ReturnLimit=1")
        .await
        .json();
    let max = orders.iter().max().copied().unwrap_or(0);
    assert!(desc[0]["DisplayOrder"].as_i64().unwrap_or(0) > max);

    let bad = sim
        .get("/KeyfactorAPI/MetadataFields?QueryString=Bogus+-eq+%22x%22")
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_code(), "0xA0B00005");
}

#[actix_rt::test]
async fn enrollment_patterns_query_string_decodes_plus_and_percent20() {
    let sim = Sim::start().await;
    for query in [
        "QueryString=Name+-eq+%22Kubernetes+Enrollment+Pattern%22",
        "QueryString=Name%20-eq%20%22Kubernetes%20Enrollment%20Pattern%22",
        "QueryString=Name+-eq+%22kubernetes+enrollment+pattern%22",
    ] {
        let reply = sim
            .get(&format!("/KeyfactorAPI/EnrollmentPatterns?{query}"))
            .await;
        assert_eq!(reply.status, 200, "{query}");
        let list = reply.json();
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{query}");
        let p = &list[0];
        assert_eq!(p["Id"], 1);
        assert_eq!(p["Name"], "Kubernetes Enrollment Pattern");
        assert_eq!(p["AllowedEnrollmentTypes"].as_i64().unwrap_or(0) & 2, 2);
        assert_eq!(p["Template"]["Id"], 12);
        assert_eq!(p["TemplateDefault"], true);
        assert!(p["CertificateAuthorities"].is_array());
    }
    let none = sim
        .get("/KeyfactorAPI/EnrollmentPatterns?QueryString=Name+-eq+%22Nope%22")
        .await
        .json();
    assert_eq!(none, json!([]));
    let pfx = sim
        .get("/KeyfactorAPI/EnrollmentPatterns?QueryString=Name+-eq+%22PFX+Only%22")
        .await
        .json();
    assert_eq!(
        pfx[0]["AllowedEnrollmentTypes"].as_i64().unwrap_or(0) & 2,
        0
    );
    let all = sim.get("/KeyfactorAPI/EnrollmentPatterns").await.json();
    assert_eq!(all.as_array().map(Vec::len), Some(2));
}

#[actix_rt::test]
async fn pattern_enrollment_issues_a_verifiable_chain() {
    let sim = Sim::start().await;
    let (pem, sha) = csr("app.example.com");
    let reply = sim.enroll(&pattern_body(&pem)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type, "application/json; charset=utf-8");
    let body = reply.json();
    let info = &body["CertificateInformation"];
    assert_eq!(info["RequestDisposition"], "ISSUED");
    assert_eq!(info["IssuerDN"], "CN=Sim Issuing CA");
    assert!(info["EnrollmentContext"].is_null());
    assert!(info["WorkflowInstanceId"].is_string());
    assert_eq!(info["WorkflowReferenceId"], 0);
    assert_eq!(body["Metadata"]["Issuer-Name"], "issuer-sample");
    let certs: Vec<String> =
        serde_json::from_value(info["Certificates"].clone()).expect("string array");
    assert_eq!(certs.len(), 3);

    let ders: Vec<Vec<u8>> = certs.iter().map(|c| pem_der(c)).collect();
    let parsed: Vec<_> = ders
        .iter()
        .map(|d| x509_parser::parse_x509_certificate(d).expect("cert").1)
        .collect();
    let (leaf, issuing, root) = (&parsed[0], &parsed[1], &parsed[2]);
    leaf.verify_signature(Some(issuing.public_key()))
        .expect("leaf signed by issuing CA");
    issuing
        .verify_signature(Some(root.public_key()))
        .expect("issuing CA signed by root");
    root.verify_signature(None).expect("root self-signed");
    assert_eq!(root.subject().to_string(), "CN=Sim Root CA");
    assert_eq!(issuing.subject().to_string(), "CN=Sim Issuing CA");
    assert_eq!(leaf.subject().to_string(), "CN=app.example.com");
    let root_file = std::fs::read_to_string(sim.ready["pki_root"].as_str().expect("pki_root"))
        .expect("root.pem");
    assert_eq!(pem_der(&root_file), ders[2]);

    let san = leaf
        .subject_alternative_name()
        .expect("san ext")
        .expect("san");
    assert_eq!(san.value.general_names.len(), 2);
    let eku = leaf.extended_key_usage().expect("eku ext").expect("eku");
    assert!(eku.value.server_auth && eku.value.client_auth);
    let validity = leaf.validity().time_to_expiration().expect("valid now");
    assert!(validity.whole_days() >= 29 && validity.whole_days() <= 30);

    let serial: String = leaf
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(info["SerialNumber"], serial.as_str());
    let sha1: String = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &ders[0])
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(info["Thumbprint"], sha1.as_str());

    // Ids increase; IncludeChain false returns the leaf only.
    let (pem2, _) = csr("app2.example.com");
    let mut body2 = pattern_body(&pem2);
    body2["IncludeChain"] = json!(false);
    body2["OwnerRoleName"] = json!("IssuerRole");
    let reply2 = sim.enroll(&body2).await;
    assert_eq!(reply2.status, 200);
    let info2 = reply2.json()["CertificateInformation"].clone();
    assert_eq!(info2["Certificates"].as_array().map(Vec::len), Some(1));
    assert!(info2["KeyfactorID"].as_i64() > info["KeyfactorID"].as_i64());
    assert!(info2["KeyfactorRequestId"].as_i64() > info["KeyfactorRequestId"].as_i64());

    let records = sim.admin(Method::GET, "/_sim/enrollments").await;
    assert_eq!(records.as_array().map(Vec::len), Some(2));
    let r = &records[0];
    assert_eq!(r["csr_sha256"], sha.as_str());
    assert_eq!(r["subject_cn"], "app.example.com");
    assert_eq!(r["template"], "WebServer1y");
    assert_eq!(r["enrollment_pattern_id"], 1);
    assert_eq!(r["certificate_authority"], "ca01.example.com\\Sub-CA");
    assert_eq!(r["metadata"]["Controller-Kind"], "issuer");
    assert_eq!(r["disposition"], "ISSUED");
    assert_eq!(r["request_id"], info["KeyfactorRequestId"]);
    assert_eq!(records[1]["owner_role"], "IssuerRole");
}

#[actix_rt::test]
async fn template_enrollment_and_validation_errors() {
    let sim = Sim::start().await;
    let (pem, _) = csr("tpl.example.com");
    for ca in ["ca01.example.com\\Sub-CA", "Sub-CA"] {
        let reply = sim.enroll(&template_body(&pem, "WebServer1y", ca)).await;
        assert_eq!(
            reply.status,
            200,
            "{ca}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    let mut cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown template",
            template_body(&pem, "NoSuchTemplate", "Sub-CA"),
            "0xA0B00021",
        ),
        (
            "unknown CA",
            template_body(&pem, "WebServer1y", "other.example.com\\Sub-CA"),
            "0xA0B00031",
        ),
        (
            "template without CA",
            template_body(&pem, "WebServer1y", ""),
            "0xA0B00030",
        ),
        (
            "neither template nor pattern",
            template_body(&pem, "", "Sub-CA"),
            "0xA0B00042",
        ),
    ];
    let mut unknown_meta = pattern_body(&pem);
    unknown_meta["Metadata"] = json!({"Issuer-Name": "x", "NoSuchField": "y"});
    cases.push(("unknown metadata", unknown_meta, "0xA0B00060"));
    let mut no_csr = pattern_body(&pem);
    no_csr["CSR"] = json!("");
    cases.push(("missing CSR", no_csr, "0xA0B00010"));
    let mut garbage = pattern_body(&pem);
    garbage["CSR"] =
        json!("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
    cases.push(("garbage CSR", garbage, "0xA0B00011"));
    let mut tampered_der = pem_der_any(&pem);
    if let Some(last) = tampered_der.last_mut() {
        *last ^= 0x01;
    }
    let mut tampered = pattern_body(&pem);
    tampered["CSR"] = json!(base64::engine::general_purpose::STANDARD.encode(&tampered_der));
    cases.push(("bad CSR signature", tampered, "0xA0B00012"));
    let mut pfx = pattern_body(&pem);
    pfx["EnrollmentPatternId"] = json!(2);
    cases.push(("pattern without CSR bit", pfx, "0xA0B00041"));
    let mut missing_pattern = pattern_body(&pem);
    missing_pattern["EnrollmentPatternId"] = json!(99);
    cases.push(("unknown pattern", missing_pattern, "0xA0B00040"));
    let mut foreign_owner = pattern_body(&pem);
    foreign_owner["OwnerRoleId"] = json!(3);
    cases.push(("owner role not the caller's", foreign_owner, "0xA0B00070"));

    for (name, body, code) in cases {
        let reply = sim.enroll(&body).await;
        assert_eq!(reply.status, 400, "{name}");
        assert_eq!(reply.error_code(), code, "{name}");
        assert!(
            !reply.json()["Message"].as_str().unwrap_or("").is_empty(),
            "{name} has a message"
        );
    }
    // Only the two good enrollments were recorded.
    let count = sim.admin(Method::GET, "/_sim/enrollments/count").await;
    assert_eq!(count["count"], 2);
}

fn pem_der_any(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

#[actix_rt::test]
async fn enrollment_count_per_csr_and_request_log() {
    let sim = Sim::start().await;
    let (pem, sha) = csr("count.example.com");
    let (_, other_sha) = csr("other.example.com");
    for _ in 0..2 {
        assert_eq!(sim.enroll(&pattern_body(&pem)).await.status, 200);
    }
    let count = sim
        .admin(
            Method::GET,
            &format!("/_sim/enrollments/count?csr_sha256={sha}"),
        )
        .await;
    assert_eq!(count, json!({"count": 2}));
    let none = sim
        .admin(
            Method::GET,
            &format!("/_sim/enrollments/count?csr_sha256={other_sha}"),
        )
        .await;
    assert_eq!(none, json!({"count": 0}));

    let requests = sim.admin(Method::GET, "/_sim/requests").await;
    let first = &requests[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/KeyfactorAPI/Enrollment/CSR");
    assert_eq!(first["status"], 200);
    assert_eq!(first["headers"]["authorization"], "<redacted>");
    assert_eq!(
        first["caller"], "command-issuer",
        "the Basic user is recorded"
    );
    assert_eq!(first["headers"]["x-certificateformat"], "PEM");
    assert!(first["body"]
        .as_str()
        .unwrap_or("")
        .contains("\"EnrollmentPatternId\":1"));
    // A refused call is still attributed to the user it presents; no header, no caller.
    let refused = sim
        .send(
            Method::GET,
            "/KeyfactorAPI/Status/Endpoints",
            Some(("CORP\\issuer", "wrong")),
            &[REQUESTED_WITH],
            None,
        )
        .await;
    assert_eq!(refused.status, 401);
    let anonymous = sim
        .send(
            Method::GET,
            "/KeyfactorAPI/Status/Endpoints",
            None,
            &[REQUESTED_WITH],
            None,
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let requests = sim.admin(Method::GET, "/_sim/requests").await;
    let n = requests.as_array().expect("array").len();
    assert_eq!(requests[n - 2]["caller"], "CORP\\issuer");
    assert_eq!(requests[n - 1]["caller"], Value::Null);
    let text = requests.to_string();
    assert!(!text.contains("sim-password-1"));
    assert!(!text.contains("wrong"), "no password in the request log");

    sim.admin(Method::POST, "/_sim/reset").await;
    let after = sim
        .admin(
            Method::GET,
            &format!("/_sim/enrollments/count?csr_sha256={sha}"),
        )
        .await;
    assert_eq!(after, json!({"count": 0}));
    let requests = sim.admin(Method::GET, "/_sim/requests").await;
    assert_eq!(requests, json!([]));
}

#[actix_rt::test]
async fn version_24_4_has_no_patterns() {
    let mut config = default_config();
    config["version"] = json!("24.4");
    let sim = Sim::start_with(config).await;
    let reply = sim
        .get("/KeyfactorAPI/EnrollmentPatterns?QueryString=Name+-eq+%22Kubernetes+Enrollment+Pattern%22")
        .await;
    assert_eq!(reply.status, 404);
    let status = sim.get("/KeyfactorAPI/Status/Endpoints").await;
    assert_eq!(status.product_version, "24.4.0.0");
    assert!(!status.json().to_string().contains("EnrollmentPatterns"));

    let (pem, _) = csr("old.example.com");
    let pattern_only = sim.enroll(&pattern_body(&pem)).await;
    assert_eq!(pattern_only.status, 400);
    assert_eq!(pattern_only.error_code(), "0xA0B00020");
    let classic = sim
        .enroll(&template_body(
            &pem,
            "WebServer1y",
            "ca01.example.com\\Sub-CA",
        ))
        .await;
    assert_eq!(classic.status, 200);
}

#[actix_rt::test]
async fn modes_answer_per_pattern_and_held_requests_can_be_released() {
    let mut config = default_config();
    let patterns = config["enrollment_patterns"]
        .as_array_mut()
        .expect("patterns");
    for (id, mode) in [
        (10, "pending"),
        (11, "external-validation"),
        (12, "deny"),
        (13, "fail-400"),
    ] {
        patterns.push(json!({
            "id": id, "name": format!("Mode {mode}"), "template": "WebServer1y", "mode": mode
        }));
    }
    let sim = Sim::start_with(config).await;
    let (pem, sha) = csr("mode.example.com");
    let with_pattern = |id: i64| {
        let mut b = pattern_body(&pem);
        b["EnrollmentPatternId"] = json!(id);
        b
    };
    let mut pending_id = 0;
    for (id, disposition) in [(10, "PENDING"), (11, "EXTERNAL VALIDATION"), (12, "DENIED")] {
        let reply = sim.enroll(&with_pattern(id)).await;
        assert_eq!(reply.status, 200, "pattern {id}");
        let info = reply.json()["CertificateInformation"].clone();
        assert_eq!(info["RequestDisposition"], disposition);
        assert_eq!(info["Certificates"], json!([]));
        assert_eq!(info["KeyfactorID"], 0);
        assert!(info["KeyfactorRequestId"].as_i64().unwrap_or(0) > 0);
        if id == 10 {
            pending_id = info["KeyfactorRequestId"].as_i64().unwrap_or(0);
        }
    }
    let failed = sim.enroll(&with_pattern(13)).await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.error_code(), "0xA0B00080");

    let released = sim
        .admin(
            Method::POST,
            &format!("/_sim/enrollments/{pending_id}/issue"),
        )
        .await;
    assert_eq!(released["disposition"], "ISSUED");
    assert!(released["keyfactor_id"].as_i64().unwrap_or(0) > 0);
    assert!(released["certificate"]
        .as_str()
        .unwrap_or("")
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let count = sim
        .admin(
            Method::GET,
            &format!("/_sim/enrollments/count?csr_sha256={sha}"),
        )
        .await;
    assert_eq!(count["count"], 4);
}

#[actix_rt::test]
async fn ca_template_and_requester_rules() {
    let mut config = default_config();
    config["cas"].as_array_mut().expect("cas").push(json!({
        "logical_name": "Standalone-CA", "host": "ca02.example.com", "standalone": true
    }));
    config["templates"]
        .as_array_mut()
        .expect("templates")
        .push(json!({
            "id": 13, "short_name": "Standalone1y", "cas": ["ca02.example.com\\Standalone-CA"],
            "allowed_roles": ["NoMetadataRole"]
        }));
    let patterns = config["enrollment_patterns"]
        .as_array_mut()
        .expect("patterns");
    patterns.push(json!({"id": 20, "name": "Standalone", "template": "Standalone1y"}));
    patterns.push(json!({
        "id": 21, "name": "Restricted", "template": "WebServer1y", "allowed_roles": ["NoMetadataRole"]
    }));
    let sim = Sim::start_with(config).await;
    let (pem, _) = csr("rules.example.com");
    let with = |pattern: Option<i64>, template: Option<&str>, ca: &str| {
        let mut b = pattern_body(&pem);
        b["EnrollmentPatternId"] = json!(pattern);
        b["Template"] = json!(template);
        b["CertificateAuthority"] = json!(ca);
        b
    };
    let cases = [
        (
            "standalone CA needs CA",
            with(Some(20), None, ""),
            "0xA0B00033",
        ),
        (
            "pattern CA not allowed",
            with(Some(1), None, "ca02.example.com\\Standalone-CA"),
            "0xA0B00032",
        ),
        (
            "template not in pattern",
            with(Some(1), Some("Standalone1y"), ""),
            "0xA0B00023",
        ),
        (
            "template not on CA",
            with(None, Some("WebServer1y"), "Standalone-CA"),
            "0xA0B00022",
        ),
        (
            "role not allowed on pattern",
            with(Some(21), None, ""),
            "0xA0B00050",
        ),
        (
            "role not allowed on template",
            with(None, Some("Standalone1y"), "Standalone-CA"),
            "0xA0B00050",
        ),
    ];
    for (name, body, code) in cases {
        let reply = sim.enroll(&body).await;
        assert_eq!(reply.status, 400, "{name}");
        assert_eq!(reply.error_code(), code, "{name}");
    }
    // The standalone pattern works when the CA is named, for an allowed role.
    let ok = sim
        .enroll_as(
            ("nometadata", "sim-password-4"),
            &with(Some(20), None, "ca02.example.com\\Standalone-CA"),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    // A 403 for a caller without the enrollment permission.
    let denied = sim
        .enroll_as(("norole", "sim-password-3"), &with(Some(1), None, ""))
        .await;
    assert_eq!(denied.status, 403);
}

#[actix_rt::test]
async fn malformed_answer_modes_issue_but_shape_the_answer() {
    let mut config = default_config();
    let patterns = config["enrollment_patterns"]
        .as_array_mut()
        .expect("patterns");
    for (id, mode) in [
        (30, "missing-fields"),
        (31, "empty-certificates"),
        (32, "broken-chain"),
        (33, "reordered-chain"),
    ] {
        patterns.push(json!({
            "id": id, "name": format!("Mode {mode}"), "template": "WebServer1y", "mode": mode
        }));
    }
    let sim = Sim::start_with(config).await;
    let root = std::fs::read_to_string(sim.ready["pki_root"].as_str().expect("pki_root"))
        .expect("root.pem");
    let issuing = std::fs::read_to_string(sim.ready["pki_issuing"].as_str().expect("pki_issuing"))
        .expect("issuing.pem");
    let enroll = |id: i64, cn: &'static str| {
        let (pem, _) = csr(cn);
        let mut b = pattern_body(&pem);
        b["EnrollmentPatternId"] = json!(id);
        let sim = &sim;
        async move {
            let reply = sim.enroll(&b).await;
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            reply.json()["CertificateInformation"].clone()
        }
    };
    let cn_of = |pem: &Value| {
        let der = pem_der(pem.as_str().expect("PEM string"));
        let (_, c) = x509_parser::parse_x509_certificate(&der).expect("cert");
        c.subject().to_string()
    };

    let missing = enroll(30, "missing.example.com").await;
    for key in [
        "Certificates",
        "KeyfactorRequestId",
        "RequestDisposition",
        "DispositionMessage",
    ] {
        assert!(missing.get(key).is_none(), "{key} present: {missing}");
    }
    assert!(missing["KeyfactorID"].as_i64().unwrap_or(0) > 0);
    assert!(missing["SerialNumber"].is_string());

    let empty = enroll(31, "empty.example.com").await;
    assert_eq!(empty["Certificates"], json!([]));
    assert_eq!(empty["RequestDisposition"], "ISSUED");
    let request_id = empty["KeyfactorRequestId"].as_i64().unwrap_or(0);
    assert!(request_id > 0);
    // The certificate exists in Command: found by its request id and downloadable with its chain.
    let found = sim
        .get(&format!(
            "/KeyfactorAPI/Certificates?pq.queryString=CertRequestId%20-eq%20{request_id}"
        ))
        .await
        .json();
    assert_eq!(found[0]["Id"], empty["KeyfactorID"]);
    let download = sim
        .send(
            Method::POST,
            "/KeyfactorAPI/Certificates/Download",
            Some(ISSUER),
            &[
                REQUESTED_WITH,
                ("x-keyfactor-api-version", "1"),
                ("x-certificateformat", "PEM"),
                ("content-type", "application/json"),
            ],
            Some(json!({"CertID": empty["KeyfactorID"], "IncludeChain": true}).to_string()),
        )
        .await;
    assert_eq!(download.status, 200);
    let content = base64::engine::general_purpose::STANDARD
        .decode(download.json()["Content"].as_str().unwrap_or(""))
        .expect("base64");
    assert_eq!(
        String::from_utf8_lossy(&content)
            .matches("BEGIN CERTIFICATE")
            .count(),
        3
    );

    let broken = enroll(32, "broken.example.com").await;
    assert_eq!(broken["RequestDisposition"], "ISSUED");
    let certs = broken["Certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 2);
    assert_eq!(cn_of(&certs[0]), "CN=broken.example.com");
    assert_eq!(pem_der(certs[1].as_str().unwrap_or("")), pem_der(&root));

    let reordered = enroll(33, "reordered.example.com").await;
    let certs = reordered["Certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 3);
    assert_eq!(pem_der(certs[0].as_str().unwrap_or("")), pem_der(&root));
    assert_eq!(cn_of(&certs[1]), "CN=reordered.example.com");
    assert_eq!(pem_der(certs[2].as_str().unwrap_or("")), pem_der(&issuing));

    let records = sim.admin(Method::GET, "/_sim/enrollments").await;
    let records = records.as_array().expect("records");
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r["disposition"] == "ISSUED"));
}
