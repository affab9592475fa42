//! Fault injection (`/_sim/faults`): rules that make the Command API (below the base path) or the
//! token endpoints (`/_idp`, `/_entra`) answer late, with an error status, not at all, with a
//! broken or non-JSON body, slowly, or that revoke every token minted so far; and rules where
//! Command does the work but its client never learns it: the work is done and a gateway answers
//! an error (`complete_then_status`), or the work completes seconds later while the answer is
//! held back or dropped (`complete_late`).
//!
//! [`Faults::fire`] decides (synchronously, under a lock) whether a rule fires for a request and
//! counts it; [`before`] and [`after`] apply the fired rule around the endpoint in
//! `server::dispatch`. A new kind needs a [`Kind`] variant and an arm in one of the two.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::errors::ApiError;
use crate::idp::oauth_json;
use crate::state::AppState;

/// `ErrorCode` of an injected `status` fault on the Command API.
pub const INJECTED_CODE: &str = "0xA0B000F1";

/// Which requests a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The Command API below the base path.
    Api,
    /// The token endpoints (`/_idp`, `/_entra`).
    Token,
    /// Both.
    Any,
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Wait `latency_ms`, then answer normally.
    Latency,
    /// Answer `status` without running the endpoint.
    Status,
    /// Close the connection without sending a response (endpoint not run).
    Reset,
    /// Run the endpoint, send its headers with the full `Content-Length` and half of the body,
    /// then close the connection.
    Truncate,
    /// Answer `200 text/html` without running the endpoint.
    NonJson,
    /// Run the endpoint and stream its body in pieces spread over `latency_ms`.
    SlowBody,
    /// Revoke every token minted so far, then handle the request normally.
    ExpireTokens,
    /// Run the endpoint (an enrollment is performed, recorded and findable), then answer
    /// `status` instead of its answer, as a gateway that timed out in front of Command does.
    CompleteThenStatus,
    /// Run the endpoint at once (an enrollment is recorded and counted), but what it produced
    /// becomes visible (`GET /Certificates`, download, follow-up) only `complete_after_ms` after
    /// the request arrived; the answer goes out `latency_ms` after arrival (default:
    /// `complete_after_ms`), or the connection is closed then instead (`drop_answer`).
    CompleteLate,
}

impl Kind {
    /// The kind as written in a rule.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Status => "status",
            Kind::Reset => "reset",
            Kind::Truncate => "truncate",
            Kind::NonJson => "non_json",
            Kind::SlowBody => "slow_body",
            Kind::ExpireTokens => "expire_tokens",
            Kind::CompleteThenStatus => "complete_then_status",
            Kind::CompleteLate => "complete_late",
        }
    }
}

/// One rule as posted to `POST /_sim/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which endpoints.
    pub target: Target,
    /// Optional case-insensitive prefix of the sub-path below the base path (API) or of the
    /// full path (token endpoints, e.g. `/_idp/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What happens.
    pub kind: Kind,
    /// Delay for `latency` and `slow_body`; for `complete_late`, when the answer goes out
    /// (counted from the request's arrival).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// `complete_late`: how long after the request arrived its result becomes visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_after_ms: Option<u64>,
    /// `complete_late`: close the connection without an answer instead of answering late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_answer: Option<bool>,
    /// Status for `status` and `complete_then_status` (400–599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` seconds (default 1 for 429; other statuses only when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Fire for this many requests only, then the rule is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Fire on every Nth matching request (1 = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Fire with this probability (0..1), from a deterministic RNG seeded with `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// RNG seed for `probability` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Rule {
    fn validate(&self) -> Result<(), String> {
        match self.kind {
            Kind::Latency | Kind::SlowBody if self.latency_ms.is_none() => {
                return Err(format!("{} needs latency_ms", self.kind.name()))
            }
            Kind::Status | Kind::CompleteThenStatus => match self.status {
                Some(400..=599) => {}
                Some(s) => return Err(format!("status {s} is not 400..599")),
                None => return Err(format!("{} needs status", self.kind.name())),
            },
            Kind::CompleteLate if self.complete_after_ms.is_none() => {
                return Err("complete_late needs complete_after_ms".into())
            }
            _ => {}
        }
        if self.kind != Kind::CompleteLate
            && (self.complete_after_ms.is_some() || self.drop_answer.is_some())
        {
            return Err("complete_after_ms and drop_answer belong to complete_late".into());
        }
        if self.latency_ms.is_some_and(|ms| ms > 60_000) {
            return Err("latency_ms must be at most 60000".into());
        }
        if self.complete_after_ms.is_some_and(|ms| ms > 60_000) {
            return Err("complete_after_ms must be at most 60000".into());
        }
        if self.count == Some(0) {
            return Err("count must be at least 1".into());
        }
        if self.every == Some(0) {
            return Err("every must be at least 1".into());
        }
        if self
            .probability
            .is_some_and(|p| !(0.0..=1.0).contains(&p) || p.is_nan())
        {
            return Err("probability must be within 0..1".into());
        }
        Ok(())
    }

    /// For `complete_late`: how long after arrival what the endpoint produced becomes visible.
    pub fn completes_after(&self) -> Option<Duration> {
        (self.kind == Kind::CompleteLate)
            .then(|| Duration::from_millis(self.complete_after_ms.unwrap_or(0)))
    }

    fn matches(&self, target: Target, path: &str) -> bool {
        let target_ok = self.target == Target::Any || self.target == target;
        let path_ok = self.path.as_deref().is_none_or(|p| {
            path.to_ascii_lowercase()
                .starts_with(&p.to_ascii_lowercase())
        });
        target_ok && path_ok
    }
}

/// A rule with its counters (`GET /_sim/faults`).
#[derive(Debug, Clone, Serialize)]
pub struct RuleState {
    /// The rule as posted.
    #[serde(flatten)]
    pub rule: Rule,
    /// Matching requests seen (including those it did not fire for).
    pub seen: u64,
    /// Times it fired.
    pub fired: u64,
    #[serde(skip)]
    rng: u64,
}

/// The active fault set.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<RuleState>>,
}

/// Body of `POST /_sim/faults`: a list of rules or `{"rules": [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FaultSetBody {
    List(Vec<Rule>),
    Object {
        #[serde(rename = "rules")]
        rules: Vec<Rule>,
    },
}

/// splitmix64 step.
fn next_random(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Vec<RuleState>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the fault set from a JSON body; returns the new set.
    pub fn replace(&self, body: &[u8]) -> Result<Vec<RuleState>, String> {
        let rules = match serde_json::from_slice::<FaultSetBody>(body) {
            Ok(FaultSetBody::List(r)) | Ok(FaultSetBody::Object { rules: r }) => r,
            Err(_) => {
                // Re-parse as a plain list for a useful message.
                return Err(match serde_json::from_slice::<Vec<Rule>>(body) {
                    Err(e) => format!("body must be a list of fault rules: {e}"),
                    Ok(_) => "body must be a list of fault rules".into(),
                });
            }
        };
        for (i, r) in rules.iter().enumerate() {
            r.validate().map_err(|e| format!("rule {i}: {e}"))?;
        }
        let states: Vec<RuleState> = rules
            .into_iter()
            .map(|rule| RuleState {
                rng: rule.seed.unwrap_or(0),
                rule,
                seen: 0,
                fired: 0,
            })
            .collect();
        *self.lock() = states.clone();
        Ok(states)
    }

    /// The active rules with their counters.
    pub fn list(&self) -> Vec<RuleState> {
        self.lock().clone()
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Rules are tried in order; each matching, not yet spent rule counts the request, and the
    /// first one that fires (`every`, `probability`) is returned and counted as fired. Rules
    /// after it do not see the request.
    pub fn fire(&self, target: Target, method: &Method, path: &str) -> Option<Rule> {
        let mut rules = self.lock();
        for (index, st) in rules.iter_mut().enumerate() {
            if !st.rule.matches(target, path) || st.rule.count.is_some_and(|n| st.fired >= n) {
                continue;
            }
            st.seen += 1;
            if st.rule.every.is_some_and(|n| st.seen % n != 0) {
                continue;
            }
            if let Some(p) = st.rule.probability {
                if next_random(&mut st.rng) >= p {
                    continue;
                }
            }
            st.fired += 1;
            tracing::info!(
                method = %method,
                path = %path,
                kind = st.rule.kind.name(),
                rule = index,
                fired = st.fired,
                "fault injected"
            );
            return Some(st.rule.clone());
        }
        None
    }
}

/// Applies the part of a fired rule that comes before the endpoint: waits (`latency`), revokes
/// tokens (`expire_tokens`) or returns the answer that replaces the endpoint (`status`, `reset`,
/// `non_json`).
pub async fn before(state: &AppState, rule: &Rule, target: Target) -> Option<HttpResponse> {
    match rule.kind {
        Kind::Latency => {
            actix_rt::time::sleep(Duration::from_millis(rule.latency_ms.unwrap_or(0))).await;
            None
        }
        Kind::ExpireTokens => {
            let revoked = state.tokens.revoke_all();
            tracing::info!(revoked, "fault expire_tokens: tokens revoked");
            None
        }
        Kind::Status => Some(status_response(state, rule, target)),
        Kind::Reset => Some(dropped_connection()),
        Kind::NonJson => Some(
            HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
                .body(
                    "<html><head><title>Service Unavailable</title></head>\
                     <body><h1>Service Unavailable</h1><p>command-sim injected fault</p></body></html>",
                ),
        ),
        Kind::Truncate | Kind::SlowBody | Kind::CompleteThenStatus | Kind::CompleteLate => None,
    }
}

/// A connection closed before any response byte (the endpoint's answer, if any, discarded).
fn dropped_connection() -> HttpResponse {
    HttpResponse::Ok().body(FaultBody::new(
        BodySize::Stream,
        VecDeque::from([(Duration::ZERO, None)]),
    ))
}

/// A gateway's error page (HTML, as load balancers answer), for `complete_then_status`.
fn gateway_response(rule: &Rule) -> HttpResponse {
    let status = rule
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::GATEWAY_TIMEOUT);
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut resp = HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(format!(
            "<html><head><title>{title}</title></head><body><h1>{title}</h1>\
             <p>command-sim injected fault: the request was completed upstream</p></body></html>"
        ));
    if let Some(secs) = rule.retry_after_secs {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    resp
}

/// Applies the part of a fired rule that changes the endpoint's answer (`truncate`,
/// `slow_body`, `complete_then_status`, `complete_late`); other kinds return `resp` unchanged.
/// `arrived` is when the request came in (`complete_late` times its answer from it).
pub async fn after(rule: Option<&Rule>, arrived: Instant, resp: HttpResponse) -> HttpResponse {
    let Some(rule) = rule else { return resp };
    match rule.kind {
        Kind::CompleteThenStatus => return gateway_response(rule),
        Kind::CompleteLate => {
            let answer_at = rule.latency_ms.or(rule.complete_after_ms).unwrap_or(0);
            let due = arrived + Duration::from_millis(answer_at);
            actix_rt::time::sleep_until(due.into()).await;
            return if rule.drop_answer == Some(true) {
                dropped_connection()
            } else {
                resp
            };
        }
        Kind::Truncate | Kind::SlowBody => {}
        _ => return resp,
    }
    let (mut resp, body) = resp.into_parts();
    let bytes = match actix_web::body::to_bytes(body).await {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    };
    let len = bytes.len() as u64;
    let steps = if rule.kind == Kind::Truncate {
        // Half of the body (at least something announced but missing), then a broken connection.
        let keep = bytes.len() / 2;
        VecDeque::from([
            (Duration::ZERO, Some(bytes.slice(..keep))),
            (Duration::from_millis(50), None),
        ])
    } else {
        let pieces = bytes.len().clamp(1, 10);
        let delay = Duration::from_millis(rule.latency_ms.unwrap_or(0)) / pieces as u32;
        let size = bytes.len().div_ceil(pieces).max(1);
        let mut steps = VecDeque::new();
        let mut at = 0;
        while at < bytes.len() || steps.is_empty() {
            let end = (at + size).min(bytes.len());
            steps.push_back((delay, Some(bytes.slice(at..end))));
            at = end;
        }
        steps
    };
    // A truncated answer still announces the full length.
    let declared = if rule.kind == Kind::Truncate {
        len.max(1)
    } else {
        len
    };
    resp.headers_mut().remove(CONTENT_LENGTH);
    resp.set_body(FaultBody::new(BodySize::Sized(declared), steps).boxed())
        .map_into_boxed_body()
}

fn status_response(state: &AppState, rule: &Rule, target: Target) -> HttpResponse {
    let status = rule
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = if target == Target::Api {
        ApiError {
            status,
            code: INJECTED_CODE,
            message: format!("Injected fault: {}", status.as_u16()),
        }
        .to_response(&state.product_version)
    } else {
        let error = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            "temporarily_unavailable"
        } else {
            "invalid_request"
        };
        oauth_json(
            status,
            &json!({"error": error, "error_description": format!("injected fault: {}", status.as_u16())}),
        )
    };
    let retry_after = match (rule.retry_after_secs, status) {
        (Some(s), _) => Some(s),
        (None, StatusCode::TOO_MANY_REQUESTS) => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    resp
}

/// A response body that sends its steps in order, each after its delay; a `None` step fails the
/// body, which makes actix-web drop the connection (before flushing anything if it is first).
struct FaultBody {
    size: BodySize,
    steps: VecDeque<(Duration, Option<Bytes>)>,
    sleep: Option<Pin<Box<actix_rt::time::Sleep>>>,
    slept: bool,
}

impl FaultBody {
    fn new(size: BodySize, steps: VecDeque<(Duration, Option<Bytes>)>) -> Self {
        FaultBody {
            size,
            steps,
            sleep: None,
            slept: false,
        }
    }
}

impl MessageBody for FaultBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        self.size
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                this.slept = true;
            }
            let Some((delay, _)) = this.steps.front() else {
                return Poll::Ready(None);
            };
            if !this.slept && !delay.is_zero() {
                this.sleep = Some(Box::pin(actix_rt::time::sleep(*delay)));
                continue;
            }
            this.slept = false;
            return match this.steps.pop_front() {
                Some((_, Some(bytes))) => Poll::Ready(Some(Ok(bytes))),
                Some((_, None)) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected fault: connection dropped",
                )))),
                None => Poll::Ready(None),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn count_every_and_path_prefix() {
        let f = Faults::default();
        f.replace(&rule(json!([
            {"target": "api", "path": "/enrollment/csr", "kind": "status", "status": 503, "count": 2},
            {"target": "any", "kind": "latency", "latency_ms": 1, "every": 2}
        ])))
        .expect("valid");
        let m = Method::POST;
        assert_eq!(
            f.fire(Target::Api, &m, "/Enrollment/CSR").map(|r| r.kind),
            Some(Kind::Status)
        );
        assert_eq!(
            f.fire(Target::Api, &m, "/Enrollment/CSR").map(|r| r.kind),
            Some(Kind::Status)
        );
        // Spent: falls through to the second rule (seen 1 → not fired, seen 2 → fired).
        assert_eq!(f.fire(Target::Api, &m, "/Enrollment/CSR"), None);
        assert_eq!(
            f.fire(Target::Token, &m, "/_idp/token").map(|r| r.kind),
            Some(Kind::Latency)
        );
        let list = f.list();
        assert_eq!((list[0].fired, list[1].seen, list[1].fired), (2, 2, 1));
        f.clear();
        assert!(f.list().is_empty());
    }

    #[test]
    fn probability_is_deterministic_and_validation_rejects_bad_rules() {
        let body = rule(
            json!({"rules": [{"target": "api", "kind": "reset", "probability": 0.5, "seed": 7}]}),
        );
        let run = || {
            let f = Faults::default();
            f.replace(&body).expect("valid");
            (0..32)
                .map(|_| f.fire(Target::Api, &Method::GET, "/x").is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
        let f = Faults::default();
        for bad in [
            json!([{"target": "api", "kind": "status"}]),
            json!([{"target": "api", "kind": "status", "status": 200}]),
            json!([{"target": "api", "kind": "latency"}]),
            json!([{"target": "api", "kind": "reset", "every": 0}]),
            json!([{"target": "api", "kind": "reset", "probability": 2.0}]),
            json!([{"target": "api", "kind": "nope"}]),
            json!([{"target": "api", "kind": "reset", "extra": 1}]),
            json!([{"target": "api", "kind": "complete_then_status"}]),
            json!([{"target": "api", "kind": "complete_then_status", "status": 200}]),
            json!([{"target": "api", "kind": "complete_late"}]),
            json!([{"target": "api", "kind": "complete_late", "complete_after_ms": 60001}]),
            json!([{"target": "api", "kind": "status", "status": 504, "drop_answer": true}]),
            json!([{"target": "api", "kind": "latency", "latency_ms": 1, "complete_after_ms": 1}]),
        ] {
            assert!(f.replace(&rule(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn completion_faults_fire_like_the_others() {
        let f = Faults::default();
        f.replace(&rule(json!([
            {"target": "api", "path": "/Enrollment/CSR", "kind": "complete_late",
             "complete_after_ms": 5000, "latency_ms": 9000, "count": 1},
            {"target": "api", "path": "/Enrollment/CSR", "kind": "complete_then_status",
             "status": 504, "every": 2}
        ])))
        .expect("valid");
        let m = Method::POST;
        let late = f.fire(Target::Api, &m, "/Enrollment/CSR").expect("fires");
        assert_eq!(late.completes_after(), Some(Duration::from_secs(5)));
        // Spent; the second rule fires on every second call it sees.
        assert_eq!(f.fire(Target::Api, &m, "/Enrollment/CSR"), None);
        let gw = f.fire(Target::Api, &m, "/Enrollment/CSR").expect("fires");
        assert_eq!(
            (gw.kind, gw.completes_after()),
            (Kind::CompleteThenStatus, None)
        );
        assert_eq!(f.fire(Target::Api, &Method::GET, "/Certificates"), None);
        let list = f.list();
        assert_eq!((list[0].fired, list[1].seen, list[1].fired), (1, 2, 1));
    }
}
