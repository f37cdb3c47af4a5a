//! Prometheus metrics (SPEC §9). Label values are route names, provider kinds and
//! fixed enums only: cardinality is bounded by the config, never by request data.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub policy_eval: prometheus::Histogram,
    pub sessions_active: IntGauge,
    pub sessions_ended: IntCounterVec,
    pub credentials_issued: IntCounterVec,
    pub credentials_revoked: IntCounterVec,
    pub credential_revoke_failures: IntCounterVec,
    pub credential_issue_seconds: HistogramVec,
    pub tls_handshake_failures: IntCounter,
    pub policy_reloads: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub approvals_pending: IntGauge,
    pub approvals_resolved: IntCounterVec,
    pub audit_dropped: IntCounter,
    pub cert_expiry: IntGauge,
    pub connections_active: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const EVAL_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.05,
];

impl Metrics {
    // Metric definitions are static: registration can only fail on a programming
    // error (duplicate name), which the unit test below catches.
    #[allow(clippy::expect_used)]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registration");
                m
            }};
        }
        Metrics {
            requests: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_requests_total",
                    "Agent calls by route and decision."
                ),
                &["route", "decision"]
            )),
            request_duration: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "chaperone_request_duration_seconds",
                    "End-to-end call duration."
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"]
            )),
            policy_eval: reg!(prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "chaperone_policy_eval_seconds",
                    "Policy evaluation time per decision."
                )
                .buckets(EVAL_BUCKETS.to_vec())
            )),
            sessions_active: reg!(IntGauge::new(
                "chaperone_sessions_active",
                "Live task sessions."
            )),
            sessions_ended: reg!(IntCounterVec::new(
                Opts::new("chaperone_sessions_ended_total", "Ended sessions by cause."),
                &["reason"]
            )),
            credentials_issued: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_credentials_issued_total",
                    "Credentials issued by provider."
                ),
                &["provider"]
            )),
            credentials_revoked: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_credentials_revoked_total",
                    "Credentials revoked by provider and reason."
                ),
                &["provider", "reason"]
            )),
            credential_revoke_failures: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_credential_revoke_failures_total",
                    "Failed revocation attempts by provider."
                ),
                &["provider"]
            )),
            credential_issue_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "chaperone_credential_issue_seconds",
                    "Credential issue latency by provider."
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["provider"]
            )),
            tls_handshake_failures: reg!(IntCounter::new(
                "chaperone_tls_handshake_failures_total",
                "Agent TLS handshakes that failed (bad, missing or untrusted SVIDs included)."
            )),
            policy_reloads: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_policy_reloads_total",
                    "Policy reloads by result."
                ),
                &["result"]
            )),
            upstream_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_upstream_errors_total",
                    "Upstream failures by route and kind."
                ),
                &["route", "kind"]
            )),
            approvals_pending: reg!(IntGauge::new(
                "chaperone_approvals_pending",
                "Calls held for approval."
            )),
            approvals_resolved: reg!(IntCounterVec::new(
                Opts::new(
                    "chaperone_approvals_resolved_total",
                    "Approvals by outcome."
                ),
                &["outcome"]
            )),
            audit_dropped: reg!(IntCounter::new(
                "chaperone_audit_dropped_total",
                "Audit records that could not be queued or written."
            )),
            cert_expiry: reg!(IntGauge::new(
                "chaperone_cert_expiry_timestamp_seconds",
                "Expiry (unix seconds) of the sidecar's current serving SVID."
            )),
            connections_active: reg!(IntGauge::new(
                "chaperone_connections_active",
                "Open agent connections."
            )),
            registry,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_metrics_register_and_render() {
        let m = super::Metrics::new();
        m.requests.with_label_values(&["r", "allow"]).inc();
        m.policy_reloads.with_label_values(&["ok"]).inc();
        let text = m.render();
        assert!(text.contains("chaperone_requests_total{decision=\"allow\",route=\"r\"} 1"));
        assert!(text.contains("chaperone_sessions_active"));
    }
}
