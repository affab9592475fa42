//! Prometheus metrics, defined once; actors record, the /metrics listener encodes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::command::CommandError;

/// Label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// issued, pending, failed, denied; or ok / error for token fetches.
    pub outcome: String,
}

/// Labels of one Command call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `GET /Status/Endpoints`, `POST /Enrollment/CSR`, …
    pub endpoint: String,
    /// HTTP status code, or the transport error class.
    pub status: String,
}

/// Labels of one issuer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    /// Issuer or ClusterIssuer.
    pub kind: String,
    /// Namespace, empty for a ClusterIssuer.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// Enrollment outcomes written to requests.
    pub enrollments: Family<OutcomeLabels, Counter>,
    /// Approval → Ready=True, seconds.
    pub enrollment_duration: Histogram,
    /// Calls to Command by endpoint and status.
    pub command_calls: Family<CallLabels, Counter>,
    /// Token fetches by outcome.
    pub token_fetches: Family<OutcomeLabels, Counter>,
    /// 1 when an issuer is Ready.
    pub issuer_ready: Family<IssuerLabels, Gauge>,
    /// Enrollments running now.
    pub in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Requests waiting for a retry.
    pub retry_queue: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// 1 while this process holds the leader lease (or runs without election).
    pub leader: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `command_issuer` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("command_issuer");
        let m = Self {
            enrollments: Family::default(),
            enrollment_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            command_calls: Family::default(),
            token_fetches: Family::default(),
            issuer_ready: Family::default(),
            in_flight: Gauge::default(),
            retry_queue: Gauge::default(),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "enrollments",
            "CertificateRequest outcomes written, by outcome",
            m.enrollments.clone(),
        );
        registry.register(
            "enrollment_duration_seconds",
            "Time from approval to Ready=True of a CertificateRequest",
            m.enrollment_duration.clone(),
        );
        registry.register(
            "command_requests",
            "Calls to Keyfactor Command by endpoint and status",
            m.command_calls.clone(),
        );
        registry.register(
            "token_fetches",
            "OAuth/ambient token fetches by outcome",
            m.token_fetches.clone(),
        );
        registry.register(
            "issuer_ready",
            "1 when the issuer is Ready",
            m.issuer_ready.clone(),
        );
        registry.register(
            "enrollments_in_flight",
            "Enrollments running now",
            m.in_flight.clone(),
        );
        registry.register(
            "retry_queue_depth",
            "CertificateRequests waiting for a retry",
            m.retry_queue.clone(),
        );
        registry.register(
            "leader",
            "1 while this process may write (leader or no election)",
            m.leader.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts one Command call from its result.
    pub fn command_call<T>(&self, endpoint: &str, result: &Result<T, CommandError>) {
        let status = match result {
            Ok(_) => "200".to_string(),
            Err(CommandError::Status { status, .. }) => status.to_string(),
            Err(e) => e.label().to_string(),
        };
        self.command_calls
            .get_or_create(&CallLabels {
                endpoint: endpoint.into(),
                status,
            })
            .inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.enrollments
            .get_or_create(&OutcomeLabels {
                outcome: "issued".into(),
            })
            .inc();
        m.command_call::<()>("POST /Enrollment/CSR", &Ok(()));
        m.command_call::<()>(
            "POST /Enrollment/CSR",
            &Err(CommandError::Status {
                status: 400,
                reason: "Bad Request".into(),
                body: String::new(),
                retry_after: None,
            }),
        );
        let text = m.encode();
        assert!(
            text.contains("command_issuer_enrollments_total{outcome=\"issued\"} 1"),
            "{text}"
        );
        assert!(text.contains("command_issuer_command_requests_total{endpoint=\"POST /Enrollment/CSR\",status=\"400\"} 1"), "{text}");
        assert!(
            text.contains("command_issuer_enrollment_duration_seconds_bucket"),
            "{text}"
        );
    }
}
