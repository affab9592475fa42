//! Bad-input catalogue (issue #6, item 4): every input users get wrong, and every way Command can
//! answer badly, with the condition and the Event it produces, on one control plane, one
//! controller and the simulator, all cases at once. The same table renders
//! docs/troubleshooting.md; `troubleshooting_doc_matches_the_catalogue` fails when the page
//! drifts (`UPDATE_DOCS=1` rewrites it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use command_issuer_e2e::fixtures::{
    install_credentials, issuer_api, repo_file, wait_issuer_ready, CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::{
    approve, cr_ca, cr_certificate, create_certificate_request, events_for, make_csr,
    ready_condition, wait_for, ControlPlane, Controller, Sim,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};

const NS: &str = "catalogue";
/// Ready reason of every failed issuer check, as the Go issuer writes it.
const ISSUER_REASON: &str = "command-issuer.IssuerController.Reconcile";
const DOC: &str = "docs/troubleshooting.md";
const A_PATTERN_ID: &str = "command-issuer.keyfactor.com/enrollmentPatternId";
const A_PATTERN_NAME: &str = "command-issuer.keyfactor.com/enrollmentPatternName";
const A_OWNER_ROLE_ID: &str = "command-issuer.keyfactor.com/ownerRoleId";
const A_TEMPLATE: &str = "command-issuer.keyfactor.com/certificateTemplate";

/// Which object shows the outcome.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    Issuer,
    Request,
}

/// What spec.request holds.
#[derive(Clone, Copy)]
enum Csr {
    Good,
    /// PEM armour around text that is not base64.
    Malformed,
    /// A CERTIFICATE block (the simulator's root) instead of a CERTIFICATE REQUEST.
    Certificate,
    /// A CSR with one byte of its signature flipped.
    BadSignature,
    /// A valid CSR padded to about 1 MiB of PEM with a private extension.
    OneMib,
}

/// How a case is set up.
enum Input {
    /// An Issuer: the working baseline spec with these changes (`null` removes a key).
    Issuer(fn(&Hosts) -> Value),
    /// A CertificateRequest, approved at once.
    Request {
        issuer: &'static str,
        kind: &'static str,
        annotations: &'static [(&'static str, &'static str)],
        csr: Csr,
        /// The reason it reaches after the documented one (a follow-up completes it).
        then: Option<&'static str>,
    },
}

/// One row of the catalogue and of docs/troubleshooting.md.
struct Case {
    name: &'static str,
    on: On,
    symptom: &'static str,
    reason: &'static str,
    /// The condition message; `<…>` (any lower-case words in angle brackets) stands for text
    /// that varies: names, ports, ids, operating-system error texts.
    message: &'static str,
    event: &'static str,
    fix: &'static str,
    input: Input,
}

/// Where the issuers point.
struct Hosts {
    sim: String,
    non_json_sim: String,
    wrong_name: String,
}

fn spec(host: &str, changes: Value) -> Value {
    command_issuer_e2e::fixtures::issuer_spec(host, changes)
}

static CASES: &[Case] = &[
    // ---- Issuer / ClusterIssuer -------------------------------------------------------------
    Case {
        name: "missing-secret",
        on: On::Issuer,
        symptom: "`commandSecretName` names a Secret that does not exist (or is in another namespace)",
        reason: ISSUER_REASON,
        message: "failed to get Secret containing Issuer credentials, secret name: <name>, reason: secrets \"<name>\" not found",
        event: "NotReady",
        fix: "Create the Secret in the controller's namespace (or, with `secretConfig.useClusterRoleForSecretAccess`, in the Issuer's namespace); the issuer turns Ready by itself.",
        input: Input::Issuer(|h| spec(&h.sim, json!({"commandSecretName": "cat-no-such-secret"}))),
    },
    Case {
        name: "wrong-secret-type",
        on: On::Issuer,
        symptom: "The credential Secret has a type other than `kubernetes.io/basic-auth` or `Opaque` (e.g. `kubernetes.io/tls`)",
        reason: ISSUER_REASON,
        message: "failed to get Secret containing Issuer credentials: found secret with unsupported type",
        event: "NotReady",
        fix: "Recreate the Secret as `kubernetes.io/basic-auth` (`username`, `password`) or `Opaque` (`tokenUrl`, `clientId`, `clientSecret`); the type cannot be edited in place.",
        input: Input::Issuer(|h| spec(&h.sim, json!({"commandSecretName": "cat-tls-type"}))),
    },
    Case {
        name: "empty-username",
        on: On::Issuer,
        symptom: "Basic-auth Secret with the `username` and `password` keys present but empty",
        reason: ISSUER_REASON,
        message: "invalid config: username is required",
        event: "NotReady",
        fix: "Put the Command user (`user`, `DOMAIN\\user` or `user@domain`) into `username` and its password into `password`.",
        input: Input::Issuer(|h| spec(&h.sim, json!({"commandSecretName": "cat-empty-basic"}))),
    },
    Case {
        name: "empty-password",
        on: On::Issuer,
        symptom: "Basic-auth Secret with a `username` but an empty `password`",
        reason: ISSUER_REASON,
        message: "invalid config: password is required",
        event: "NotReady",
        fix: "Put the password into the Secret's `password` key.",
        input: Input::Issuer(|h| spec(&h.sim, json!({"commandSecretName": "cat-empty-password"}))),
    },
    Case {
        name: "empty-oauth-keys",
        on: On::Issuer,
        symptom: "OAuth (`Opaque`) Secret with `tokenUrl`, `clientId` and `clientSecret` present but empty",
        reason: ISSUER_REASON,
        message: "invalid config: tokenURL is required",
        event: "NotReady",
        fix: "Fill in `tokenUrl`, `clientId` and `clientSecret` (the message names the first empty one, in that order).",
        input: Input::Issuer(|h| spec(&h.sim, json!({"commandSecretName": "cat-empty-oauth"}))),
    },
    Case {
        name: "garbage-ca-bundle",
        on: On::Issuer,
        symptom: "The CA bundle (`caSecretName`/`caBundleConfigMapName` + `caBundleKey`) holds text that is not a PEM certificate",
        reason: ISSUER_REASON,
        message: "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: failed to append custom CA cert to pool",
        event: "NotReady",
        fix: "Store the PEM certificate(s) of the CA that signed Command's TLS certificate under that key (`-----BEGIN CERTIFICATE-----` …).",
        input: Input::Issuer(|h| spec(&h.sim, json!({"caSecretName": "cat-garbage-ca"}))),
    },
    Case {
        name: "garbage-pem-ca-bundle",
        on: On::Issuer,
        symptom: "The CA bundle is PEM armour around bytes that are no certificate",
        reason: ISSUER_REASON,
        message: "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: failed to append custom CA cert to pool",
        event: "NotReady",
        fix: "As above: the bundle must hold at least one parsable certificate.",
        input: Input::Issuer(|h| spec(&h.sim, json!({"caSecretName": "cat-garbage-pem-ca"}))),
    },
    Case {
        name: "missing-ca-key",
        on: On::Issuer,
        symptom: "`caBundleKey` names a key the CA Secret/ConfigMap does not have",
        reason: ISSUER_REASON,
        message: "failed to get CA bundle key from CA certificate data: caBundleKey '<key>' not found in CA bundle data",
        event: "NotReady",
        fix: "Fix `caBundleKey`, or add that key; without `caBundleKey` the alphabetically last key is used.",
        input: Input::Issuer(|h| spec(&h.sim, json!({"caBundleKey": "no-such.crt"}))),
    },
    Case {
        name: "unreachable-host",
        on: On::Issuer,
        symptom: "`hostname` names a host or port where nothing listens (or a firewall drops the connection)",
        reason: ISSUER_REASON,
        message: "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: Get \"https://<host>/KeyfactorAPI/Status/Endpoints\": <cause>",
        event: "NotReady",
        fix: "Check `hostname` (and `apiPath`) and that the controller's pod can reach Command (network policies, proxies: the chart's `env` sets `HTTPS_PROXY`/`NO_PROXY`). The issuer is re-checked with backoff and turns Ready once Command answers.",
        input: Input::Issuer(|_| spec("127.0.0.1:1", json!({}))),
    },
    Case {
        name: "tls-name-mismatch",
        on: On::Issuer,
        symptom: "Command's TLS certificate does not name the host in `hostname` (e.g. an IP address or an alias)",
        reason: ISSUER_REASON,
        message: "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: Get \"https://<host>/KeyfactorAPI/Status/Endpoints\": <cause>certificate not valid for name<names>",
        event: "NotReady",
        fix: "Set `hostname` to a name the certificate carries (the message lists them), or have Command's certificate reissued with that name.",
        input: Input::Issuer(|h| {
            spec(&h.wrong_name, json!({"caSecretName": "cat-wrong-name-ca"}))
        }),
    },
    // ---- CertificateRequest -----------------------------------------------------------------
    Case {
        name: "malformed-csr-pem",
        on: On::Request,
        symptom: "`spec.request` is PEM armour around text that is not base64 (or not PEM at all)",
        reason: "Pending",
        message: "failed to sign: csr is invalid: PEM block type must be CERTIFICATE REQUEST",
        event: "Pending",
        fix: "Create a new request with a PEM `CERTIFICATE REQUEST`; cert-manager's own Certificates always do. Retried until `--max-retry-duration`, then `Failed`.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[], csr: Csr::Malformed, then: None },
    },
    Case {
        name: "wrong-pem-type",
        on: On::Request,
        symptom: "`spec.request` holds a `CERTIFICATE` PEM block instead of a `CERTIFICATE REQUEST`",
        reason: "Pending",
        message: "failed to sign: csr is invalid: PEM block type must be CERTIFICATE REQUEST",
        event: "Pending",
        fix: "Send the CSR, not a certificate.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[], csr: Csr::Certificate, then: None },
    },
    Case {
        name: "bad-csr-signature",
        on: On::Request,
        symptom: "The CSR's signature does not verify (altered after signing, or signed with another key)",
        reason: "Pending",
        message: "failed to sign: csr is invalid: CSR signature does not verify",
        event: "Pending",
        fix: "Generate the CSR again with the key whose public half it carries.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[], csr: Csr::BadSignature, then: None },
    },
    Case {
        name: "csr-1mib",
        on: On::Request,
        symptom: "`spec.request` is about 1 MiB (the apiserver itself refuses objects above about 1.5 MiB)",
        reason: "Pending",
        message: "failed to sign: csr is invalid: the CSR is <size> bytes, more than the 262144 bytes accepted",
        event: "Pending",
        fix: "Real CSRs are a few KiB; find what fills it (extensions, SANs). Nothing is sent to Command.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[], csr: Csr::OneMib, then: None },
    },
    Case {
        name: "unknown-issuer-kind",
        on: On::Request,
        symptom: "`issuerRef.kind` is neither `Issuer` nor `ClusterIssuer` (group `command-issuer.keyfactor.com`)",
        reason: "Failed",
        message: "error interpreting issuerRef: kind \"<kind>\" is neither Issuer nor ClusterIssuer",
        event: "Failed",
        fix: "Final. Fix `issuerRef.kind` in the Certificate; cert-manager then creates a new request.",
        input: Input::Request { issuer: "cat-good", kind: "Foo", annotations: &[], csr: Csr::Good, then: None },
    },
    Case {
        name: "empty-issuer-kind",
        on: On::Request,
        symptom: "`issuerRef.kind` is empty",
        reason: "Issued",
        message: "Signed",
        event: "Issued",
        fix: "Nothing: an empty kind means `Issuer`, as for cert-manager's own issuers (the Go issuer failed these).",
        input: Input::Request { issuer: "cat-good", kind: "", annotations: &[], csr: Csr::Good, then: None },
    },
    Case {
        name: "missing-issuer",
        on: On::Request,
        symptom: "`issuerRef.name` names no Issuer in the request's namespace (or no ClusterIssuer)",
        reason: "Pending",
        message: "error getting issuer: issuers.command-issuer.keyfactor.com \"<name>\" not found",
        event: "Pending",
        fix: "Create the issuer (an Issuer must be in the request's namespace) or fix `issuerRef`; the request continues once it exists and is Ready.",
        input: Input::Request { issuer: "cat-no-such-issuer", kind: "Issuer", annotations: &[], csr: Csr::Good, then: None },
    },
    Case {
        name: "issuer-not-ready",
        on: On::Request,
        symptom: "The issuer exists but its `Ready` is False (any issuer row above)",
        reason: "Pending",
        message: "issuer is not ready",
        event: "Pending",
        fix: "Fix the issuer (its message says how); the request continues as soon as the issuer turns Ready.",
        input: Input::Request { issuer: "missing-secret", kind: "Issuer", annotations: &[], csr: Csr::Good, then: None },
    },
    Case {
        name: "bad-annotation-integer",
        on: On::Request,
        symptom: "An integer annotation (`enrollmentPatternId`, `ownerRoleId`) is not a number",
        reason: "Pending",
        message: "failed to build the signer: failed to create signer: invalid signer config: failed to parse enrollmentPatternId from annotations: strconv.ParseInt: parsing \"<value>\": invalid syntax",
        event: "Pending",
        fix: "Write a decimal number as a string (`\"1234\"`) on the Certificate; cert-manager copies it to new requests.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_PATTERN_ID, "foobar!")], csr: Csr::Good, then: None },
    },
    Case {
        name: "annotation-integer-out-of-range",
        on: On::Request,
        symptom: "An integer annotation does not fit in 32 bits",
        reason: "Pending",
        message: "failed to build the signer: failed to create signer: invalid signer config: failed to parse ownerRoleId from annotations: strconv.ParseInt: parsing \"<value>\": value out of range",
        event: "Pending",
        fix: "Use the id Command shows (ids are 32-bit).",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_OWNER_ROLE_ID, "99999999999")], csr: Csr::Good, then: None },
    },
    Case {
        name: "reserved-metadata-annotation",
        on: On::Request,
        symptom: "A custom metadata annotation names one of the predefined fields (e.g. `Controller-Reconcile-Id`)",
        reason: "Pending",
        message: "failed to build the signer: failed to create signer: invalid signer config: metadata annotation \"metadata.command-issuer.keyfactor.com/Controller-Reconcile-Id\" names a field the controller sets itself; remove the annotation",
        event: "Pending",
        fix: "Remove the annotation from the Certificate: the controller sets the predefined fields itself (they are how an interrupted enrollment is found again).",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[("metadata.command-issuer.keyfactor.com/Controller-Reconcile-Id", "x")], csr: Csr::Good, then: None },
    },
    Case {
        name: "unknown-pattern-name",
        on: On::Request,
        symptom: "`enrollmentPatternName` names no enrollment pattern in Command",
        reason: "Pending",
        message: "failed to sign: enrollment pattern failure: enrollment pattern not found: <name>",
        event: "Pending",
        fix: "Use the pattern's exact name (Command › Enrollment Patterns), or its id in `enrollmentPatternId`. The role needs `/enrollment_pattern/read/` to look names up.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_PATTERN_NAME, "No Such Pattern")], csr: Csr::Good, then: None },
    },
    Case {
        name: "ambiguous-pattern-name",
        on: On::Request,
        symptom: "`enrollmentPatternName` matches more than one enrollment pattern",
        reason: "Pending",
        message: "failed to sign: enrollment pattern failure: multiple enrollment patterns found: <name>",
        event: "Pending",
        fix: "Use `enrollmentPatternId` instead (it wins over the name), or rename one of the patterns in Command.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_PATTERN_NAME, "Duplicated Pattern")], csr: Csr::Good, then: None },
    },
    Case {
        name: "unknown-pattern-id",
        on: On::Request,
        symptom: "`enrollmentPatternId` names no enrollment pattern in Command",
        reason: "Pending",
        message: "failed to sign: command enrollment failure: <hints> Error response from Command: <body>: 400 Bad Request",
        event: "Pending",
        fix: "Use an existing pattern id; the hints and Command's own error body say what it refused.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_PATTERN_ID, "999")], csr: Csr::Good, then: None },
    },
    Case {
        name: "command-non-json",
        on: On::Request,
        symptom: "Something answers the enrollment with a `200` that is not JSON (a proxy, gateway or login page in front of Command)",
        reason: "Pending",
        message: "failed to sign: command enrollment failure: the answer is not Command's JSON enrollment response (is a proxy, gateway or login page answering for Command?): failed to decode response from Command: <detail>",
        event: "Pending",
        fix: "Check what answers at `https://<hostname>/<apiPath>/Enrollment/CSR` (proxy rules, `NO_PROXY`, a WAF); retried with backoff.",
        input: Input::Request { issuer: "cat-non-json", kind: "Issuer", annotations: &[], csr: Csr::Good, then: None },
    },
    Case {
        name: "missing-fields",
        on: On::Request,
        symptom: "Command's enrollment answer lacks `Certificates`, `KeyfactorRequestId` and `RequestDisposition`",
        reason: "Pending",
        message: "failed to sign: Command's enrollment answer lacks Certificates, KeyfactorRequestId, RequestDisposition (certificate id <id>, serial <serial>); check the Command version and any proxy in between; the next attempt looks for the certificate by this enrollment's Controller-Reconcile-Id (with SupportsMetadata) before enrolling again",
        event: "Pending",
        fix: "Usually nothing: with `SupportsMetadata=True` the next attempt finds the certificate Command issued and the request is `Issued` without a second enrollment (without it, Command is asked again). Fix whatever strips the fields (a proxy, an unsupported Command version) if it keeps happening; after `--max-retry-duration` the request is `Failed`.",
        input: Input::Request {
            issuer: "cat-good",
            kind: "Issuer",
            annotations: &[(A_TEMPLATE, "MissingFields")],
            csr: Csr::Good,
            then: Some("Issued"),
        },
    },
    Case {
        name: "empty-certificates",
        on: On::Request,
        symptom: "Command answers `ISSUED` with an empty `Certificates` array",
        reason: "Pending",
        message: "Command returned no certificate for request id <id> (disposition ISSUED: <message>); fetching it from Command every --pending-poll-interval",
        event: "Pending",
        fix: "Nothing: the request id is recorded and the certificate downloaded on the next follow-up (then `Issued`), never enrolled twice. If it stays, look the request id up in Command.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_TEMPLATE, "EmptyCertificates")], csr: Csr::Good, then: Some("Issued") },
    },
    Case {
        name: "broken-chain",
        on: On::Request,
        symptom: "Command's chain lacks a CA certificate (leaf and root, no intermediate)",
        reason: "Pending",
        message: "failed to sign: certificate chain is malformed or broken: no certificate among the <n> returned issued <subject> (its issuer is <issuer>); the CA chain Command returns lacks that certificate; fetching the certificate of request id <id> from Command again every --pending-poll-interval",
        event: "Pending",
        fix: "Import the missing CA certificate into Command. The certificate is downloaded again every poll (then `Issued`) and never enrolled twice; after `--max-retry-duration` the request is `Failed`.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_TEMPLATE, "BrokenChain")], csr: Csr::Good, then: Some("Issued") },
    },
    Case {
        name: "reordered-chain",
        on: On::Request,
        symptom: "Command returns the chain out of order (root first, leaf in the middle)",
        reason: "Issued",
        message: "Signed",
        event: "Issued",
        fix: "Nothing: the chain is ordered by issuer and signature, so `status.certificate` is leaf then intermediates and `status.ca` the root, whatever the order Command used.",
        input: Input::Request { issuer: "cat-good", kind: "Issuer", annotations: &[(A_TEMPLATE, "ReorderedChain")], csr: Csr::Good, then: None },
    },
];

// ---- message patterns ------------------------------------------------------------------------

/// The literal pieces of a pattern, split at its `<…>` placeholders.
fn literal_parts(pattern: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let b = pattern.as_bytes();
    while i < b.len() {
        if b[i] == b'<' {
            let close = pattern[i + 1..].find('>').map(|j| i + 1 + j);
            let is_placeholder = close.is_some_and(|c| {
                c > i + 1
                    && pattern[i + 1..c]
                        .bytes()
                        .all(|x| x.is_ascii_lowercase() || x == b' ' || x == b'-')
            });
            if let (true, Some(c)) = (is_placeholder, close) {
                parts.push(&pattern[start..i]);
                start = c + 1;
                i = c + 1;
                continue;
            }
        }
        i += 1;
    }
    parts.push(&pattern[start..]);
    parts
}

/// True when `text` is `pattern` with each placeholder replaced by any text.
fn matches(pattern: &str, text: &str) -> bool {
    let parts = literal_parts(pattern);
    let [first, middle @ .., last] = &parts[..] else {
        return text == pattern;
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn patterns_match_what_they_should() {
    assert!(matches("a <x> b", "a anything b"));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exact!"));
    assert!(matches(
        "x: <cause>name<names>",
        "x: bad certificate not valid for name \"a\""
    ));
    assert!(!matches("x: <cause>name<names>", "x: other"));
    assert!(matches("{\"a\":\"<code>\"}", "{\"a\":\"0x1\"}"));
    assert!(matches("<Keep> <x>", "<Keep> y"));
    assert!(!matches("<Keep> <x>", "Keep y"));
}

// ---- the document --------------------------------------------------------------------------

fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn table(on: On) -> String {
    let mut t = String::from(
        "| Symptom / input | Ready reason | Message (`<…>` varies) | Event | What to do |\n|---|---|---|---|---|\n",
    );
    for c in CASES.iter().filter(|c| c.on == on) {
        let event_type = if c.event == "Issued" {
            "Normal"
        } else {
            "Warning"
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} ({event_type}) | {} |\n",
            cell(c.symptom),
            code(c.reason),
            cell(&code(c.message)),
            code(c.event),
            cell(c.fix)
        ));
    }
    t
}

fn render_doc() -> String {
    format!(
        r#"# Troubleshooting: bad inputs and what they produce

Every row below is created by the bad-input catalogue (`tests/e2e/tests/catalogue.rs`) on a real
apiserver with the controller and the Command simulator, which checks the condition, the Event and
that the controller never panics. This page is generated from that table (`UPDATE_DOCS=1 cargo test
-p command-issuer-e2e --test catalogue troubleshooting` rewrites it; a test fails when it drifts).
In a message, `<…>` stands for text that varies: names, ports, ids, operating-system error texts.
More messages (Command's 401/403, metadata permissions, ambient credentials) are in
[`install.md`](install.md#6-troubleshooting) and [`operations.md`](operations.md).

## Issuer and ClusterIssuer

`kubectl describe issuer <name>` shows `Ready=False`, reason `{ISSUER_REASON}` and the
message; a `NotReady` Warning Event carries the same text when Ready turns False. The issuer is
checked again with backoff (2 s doubling up to 5 min) and on any change to it or to the Secret or
ConfigMap it names, so fixing the cause heals it without a restart. Its requests wait with
`issuer is not ready` meanwhile.

{}
## CertificateRequest

`kubectl describe certificaterequest <name>` shows the `Ready` condition; every change of it
also comes as an Event whose message is the condition message followed by `[op <operation id>]`
(the id to grep the controller's log for). `Pending` requests are retried: transient causes with
backoff for as long as it takes, causes that cannot heal by themselves (bad CSR, unknown pattern,
a 400 from Command) until `--max-retry-duration` (default `1h`) after approval, then `Failed`.
`Failed` and `Issued` are final.

{}
## Decisions behind these rows

- **Reordered chain**: accepted. Certificates are linked by issuer name and signature, whatever
  their order, so `status.certificate` is always leaf → intermediates and `status.ca` the root
  (or the topmost CA when Command sends no root); duplicates are dropped.
- **Broken chain, or a certificate string that is no PEM**: Command has issued the certificate
  already, so the request is not enrolled again. With a `KeyfactorRequestId` the id is recorded
  on the request and the certificate downloaded again every `--pending-poll-interval`; the message
  names the missing CA.
- **Empty `Certificates`** with a request id: held and followed up like a request awaiting approval
  in Command (the Go issuer panicked here and enrolled again on every retry).
- **No request id** (missing fields, or a broken chain without an id): `Pending`, naming the
  missing fields and whatever ids Command did send. Every enrollment carries its operation id as
  `Controller-Reconcile-Id` metadata and is recorded on the request before Command is called, so
  the next attempt finds the certificate Command issued instead of enrolling again (with
  `SupportsMetadata=True`); it counts as a cause that cannot heal by itself
  (`--max-retry-duration`).
- **CSR size**: `spec.request` above 256 KiB is refused before parsing and never sent to Command;
  the issued chain has to fit into the same object.
- **Not JSON**: the configuration hints of a refused enrollment are left out (they would point at
  the template), the message says what answered instead.
"#,
        table(On::Issuer),
        table(On::Request)
    )
}

#[test]
fn troubleshooting_doc_matches_the_catalogue() {
    let path = repo_file(DOC);
    let want = render_doc();
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write docs/troubleshooting.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{DOC} differs from the catalogue in tests/e2e/tests/catalogue.rs; regenerate it with \
         UPDATE_DOCS=1 cargo test -p command-issuer-e2e --test catalogue troubleshooting"
    );
}

// ---- the end-to-end run --------------------------------------------------------------------

/// The simulator configuration: the default plus a template per malformed answer and two
/// patterns sharing a name.
fn catalogue_sim_config() -> Result<std::path::PathBuf> {
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(
        command_issuer_e2e::paths::default_sim_config(),
    )?)?;
    let web = config["templates"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["short_name"] == "WebServer1y"))
        .cloned()
        .ok_or_else(|| anyhow!("default config has no WebServer1y"))?;
    let templates = config["templates"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("templates"))?;
    for (id, name, mode) in [
        (50, "MissingFields", "missing-fields"),
        (51, "EmptyCertificates", "empty-certificates"),
        (52, "BrokenChain", "broken-chain"),
        (53, "ReorderedChain", "reordered-chain"),
    ] {
        let mut t = web.clone();
        t["id"] = json!(id);
        t["short_name"] = json!(name);
        t["mode"] = json!(mode);
        templates.push(t);
    }
    let patterns = config["enrollment_patterns"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("patterns"))?;
    for id in [60, 61] {
        patterns.push(json!({"id": id, "name": "Duplicated Pattern", "template": "WebServer1y"}));
    }
    let dir = command_issuer_e2e::paths::fresh_temp_dir("catalogue-sim-config")?;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path)
}

/// A TLS server whose certificate names only `wrong-name.invalid`, with the CA that signed it.
async fn wrong_name_server() -> Result<(String, String, tokio::task::JoinHandle<()>)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Catalogue Other CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["wrong-name.invalid".to_string()])?
        .signed_by(&key, &ca)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    Ok((addr, ca_cert.pem(), task))
}

async fn secret(client: &Client, name: &str, type_: &str, data: &[(&str, &str)]) -> Result<()> {
    let map: BTreeMap<&str, &str> = data.iter().copied().collect();
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": name}, "type": type_, "stringData": map}),
    )?;
    Api::<Secret>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &s)
        .await
        .with_context(|| format!("creating Secret {name}"))?;
    Ok(())
}

async fn create_issuer(client: &Client, name: &str, spec: Value) -> Result<()> {
    let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
                     "metadata": {"name": name, "namespace": NS}, "spec": spec});
    issuer_api(client, "Issuer", Some(NS))
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await
        .with_context(|| format!("creating Issuer {name}"))?;
    Ok(())
}

/// spec.request for a case, and the DER Command would record (for the enrollment count).
fn csr_for(kind: Csr, cn: &str, sim: &Sim) -> Result<(String, Vec<u8>)> {
    let (good, der) = make_csr(cn, &[cn])?;
    Ok(match kind {
        Csr::Good => (good, der),
        Csr::Malformed => (
            "-----BEGIN CERTIFICATE REQUEST-----\nthis is not base64!\n-----END CERTIFICATE REQUEST-----\n".into(),
            der,
        ),
        Csr::Certificate => (sim.root_pem().to_string(), der),
        Csr::BadSignature => {
            let mut bad = der.clone();
            let n = bad.len();
            bad[n - 5] ^= 0xff;
            (command_issuer::pki::to_pem("CERTIFICATE REQUEST", &bad), bad)
        }
        Csr::OneMib => {
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(vec![cn.to_string()])?;
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 55555, 1],
                    vec![0x5a; 770 * 1024],
                ));
            let req = params.serialize_request(&key)?;
            (req.pem()?, req.der().to_vec())
        }
    })
}

/// Waits for an Event with `reason` whose note matches `pattern` (plus the `[op …]` suffix of
/// request Events), returning its note.
async fn wait_event_note(
    client: &Client,
    name: &str,
    reason: &str,
    pattern: &str,
    op_suffix: bool,
) -> Result<String> {
    let pattern = if op_suffix {
        format!("{pattern} [op <op>]")
    } else {
        pattern.to_string()
    };
    let pattern = pattern.as_str();
    wait_for(
        Duration::from_secs(30),
        &format!("{reason} Event on {NS}/{name} matching {pattern:?}"),
        || async move {
            let events = events_for(client, NS, name).await.ok()?;
            events.into_iter().find_map(|e| {
                let note = e.note.unwrap_or_default();
                (e.reason.as_deref() == Some(reason)
                    && (reason == "Issued" || matches(pattern, &note)))
                .then_some(note)
            })
        },
    )
    .await
}

async fn issuer_ready_condition(client: &Client, name: &str) -> Option<Value> {
    let o = issuer_api(client, "Issuer", Some(NS))
        .get(name)
        .await
        .ok()?;
    o.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

async fn check_issuer_case(client: &Client, c: &Case) -> Result<String> {
    let got = wait_for(
        Duration::from_secs(30),
        &format!("issuer {}", c.name),
        || async move {
            issuer_ready_condition(client, c.name).await.filter(|r| {
                r["status"] == "False"
                    && r["reason"] == c.reason
                    && matches(c.message, r["message"].as_str().unwrap_or(""))
            })
        },
    )
    .await;
    if got.is_err() {
        let now = issuer_ready_condition(client, c.name).await;
        bail!(
            "want Ready=False/{} with message {:?}, got {}",
            c.reason,
            c.message,
            now.unwrap_or_default()
        );
    }
    wait_event_note(client, c.name, c.event, c.message, false).await
}

async fn check_request_case(
    client: &Client,
    sim: &Sim,
    c: &Case,
    then: Option<&str>,
    der: &[u8],
) -> Result<String> {
    let note = wait_event_note(client, c.name, c.event, c.message, true).await?;
    let (final_reason, final_pattern) = match then {
        Some(r) => (r, if r == "Issued" { "Signed" } else { "<any>" }),
        None => (c.reason, c.message),
    };
    let got = wait_for(
        Duration::from_secs(30),
        &format!("request {}", c.name),
        || async move {
            ready_condition(client, NS, c.name)
                .await
                .ok()
                .flatten()
                .filter(|r| r.reason == final_reason && matches(final_pattern, &r.message))
        },
    )
    .await;
    if got.is_err() {
        let now = ready_condition(client, NS, c.name).await?;
        bail!("want {final_reason} with message {final_pattern:?}, got {now:?}");
    }
    // Whatever Command answered, one enrollment per request.
    let enrolled = sim.enrollment_count(der).await?;
    if enrolled > 1 {
        bail!("enrolled {enrolled} times");
    }
    if c.name == "reordered-chain" {
        check_leaf_first(client, sim, c.name).await?;
    }
    Ok(note)
}

/// status.certificate is leaf then issuing CA; status.ca is the root.
async fn check_leaf_first(client: &Client, sim: &Sim, name: &str) -> Result<()> {
    let der_of = |pem: &str| -> Result<Vec<Vec<u8>>> {
        x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .map(|p| p.map(|p| p.contents).map_err(|e| anyhow!("PEM: {e}")))
            .collect()
    };
    let chain = der_of(&cr_certificate(client, NS, name).await?.unwrap_or_default())?;
    let ca = der_of(&cr_ca(client, NS, name).await?.unwrap_or_default())?;
    let root = der_of(sim.root_pem())?;
    let issuing = der_of(sim.issuing_pem())?;
    let leaf_cn = chain
        .first()
        .and_then(|d| x509_parser::parse_x509_certificate(d).ok())
        .map(|(_, c)| c.subject().to_string());
    if chain.len() != 2
        || leaf_cn.as_deref() != Some(&format!("CN={name}.catalogue.test"))
        || chain.get(1) != issuing.first()
        || ca != root
    {
        bail!("status.certificate is not leaf → issuing CA with the root in status.ca (leaf {leaf_cn:?}, {} certificates)", chain.len());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_documented_condition_and_event() -> Result<()> {
    let started = Instant::now();
    let mut cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let config = catalogue_sim_config()?;
    let sim = Sim::start(&config).await?;
    let non_json_sim = Sim::start(&config).await?;
    non_json_sim
        .admin_post(
            "/_sim/faults",
            Some(&json!([{"target": "api", "path": "/Enrollment/CSR", "kind": "non_json"}])),
        )
        .await?;
    let (wrong_name, wrong_name_ca, wrong_name_task) = wrong_name_server().await?;
    let hosts = Hosts {
        sim: sim.host_port(),
        non_json_sim: non_json_sim.host_port(),
        wrong_name,
    };

    install_credentials(&cp, &sim, &[]).await?;
    cp.create_namespace(NS).await?;
    let basic = "kubernetes.io/basic-auth";
    secret(
        &client,
        "cat-tls-type",
        "kubernetes.io/tls",
        &[("tls.crt", "x"), ("tls.key", "y")],
    )
    .await?;
    secret(
        &client,
        "cat-empty-basic",
        basic,
        &[("username", ""), ("password", "")],
    )
    .await?;
    secret(
        &client,
        "cat-empty-password",
        basic,
        &[("username", "command-issuer"), ("password", "")],
    )
    .await?;
    secret(
        &client,
        "cat-empty-oauth",
        "Opaque",
        &[("tokenUrl", ""), ("clientId", ""), ("clientSecret", "")],
    )
    .await?;
    secret(
        &client,
        "cat-garbage-ca",
        "Opaque",
        &[("ca.crt", "this is not a certificate")],
    )
    .await?;
    secret(
        &client,
        "cat-garbage-pem-ca",
        "Opaque",
        &[(
            "ca.crt",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )],
    )
    .await?;
    secret(
        &client,
        "cat-wrong-name-ca",
        "Opaque",
        &[("ca.crt", &wrong_name_ca)],
    )
    .await?;
    secret(
        &client,
        "cat-non-json-ca",
        "Opaque",
        &[("ca.crt", non_json_sim.tls_ca_pem())],
    )
    .await?;

    let mut ctl = Controller::start(cp.admin_kubeconfig(), &["--pending-poll-interval=2s"])?;
    create_issuer(&client, "cat-good", spec(&hosts.sim, json!({}))).await?;
    create_issuer(
        &client,
        "cat-non-json",
        spec(
            &hosts.non_json_sim,
            json!({"caSecretName": "cat-non-json-ca"}),
        ),
    )
    .await?;
    for c in CASES {
        if let Input::Issuer(f) = &c.input {
            create_issuer(&client, c.name, f(&hosts)).await?;
        }
    }
    for name in ["cat-good", "cat-non-json"] {
        wait_issuer_ready(
            &client,
            "Issuer",
            Some(NS),
            name,
            "True",
            Duration::from_secs(30),
        )
        .await?;
    }
    let mut ders = BTreeMap::new();
    for c in CASES {
        if let Input::Request {
            issuer,
            kind,
            annotations,
            csr,
            ..
        } = &c.input
        {
            let (pem, der) = csr_for(*csr, &format!("{}.catalogue.test", c.name), &sim)?;
            create_certificate_request(&client, NS, c.name, &pem, kind, issuer, annotations)
                .await?;
            approve(&client, NS, c.name).await?;
            ders.insert(c.name, der);
        }
    }

    let mut failures = Vec::new();
    for c in CASES {
        let r = match &c.input {
            Input::Issuer(_) => check_issuer_case(&client, c).await,
            Input::Request { then, .. } => {
                let der = ders.get(c.name).map(Vec::as_slice).unwrap_or_default();
                check_request_case(&client, &sim, c, *then, der).await
            }
        };
        match r {
            Ok(note) => println!("ok   {}: {} {note}", c.name, c.event),
            Err(e) => failures.push(format!("{}: {e:#}", c.name)),
        }
    }
    let panics: Vec<String> = ctl
        .logs()
        .lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_string)
        .collect();
    if !panics.is_empty() {
        failures.push(format!("the controller panicked:\n{}", panics.join("\n")));
    }
    if !ctl.is_running() {
        failures.push(format!("the controller exited: {:?}", ctl.exit_status()));
    }
    wrong_name_task.abort();
    if !failures.is_empty() {
        cp.keep_on_drop(true);
        bail!(
            "{} of {} catalogue case(s) failed:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }
    println!(
        "{} catalogue cases passed in {:.1?}",
        CASES.len(),
        started.elapsed()
    );
    Ok(())
}
