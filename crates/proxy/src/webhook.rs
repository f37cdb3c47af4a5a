//! Approval notifications: POST the approval as JSON (with a Slack-compatible
//! `text` field) to `approvals.webhook`. Failures are logged and retried with
//! backoff in the background; they never block the held call or the data path.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};

use crate::approvals::ApprovalRecord;
use crate::body;
use crate::sidecar::Sidecar;

const ATTEMPTS: u32 = 5;

pub fn notify(sc: &Arc<Sidecar>, record: &ApprovalRecord) {
    let Some(url) = sc.cfg().approvals.webhook.clone() else {
        return;
    };
    let text = format!(
        "chaperone: approval {} requested by {} for {} {} on route {}{} — reasons: {}. Approve with `chaperone admin approvals approve {}`",
        record.id,
        record.spiffe_id,
        record.method,
        record.path,
        record.route,
        record.tool.as_deref().map(|t| format!(" (tool {t})")).unwrap_or_default(),
        record.reasons.join("; "),
        record.id,
    );
    let mut payload = serde_json::to_value(record).unwrap_or_default();
    payload["text"] = serde_json::Value::String(text);
    payload["event"] = serde_json::Value::String("approval.requested".into());
    let body = payload.to_string();
    let Some(client) = webhook_client() else {
        tracing::error!("approval webhook client could not be built");
        return;
    };
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let req = Request::post(url.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body::full(body.clone()));
            let Ok(req) = req else {
                tracing::error!(url = %url, "approval webhook URL is invalid");
                return;
            };
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(resp))
                    if resp.status().is_success() || resp.status() == StatusCode::NO_CONTENT =>
                {
                    return
                }
                Ok(Ok(resp)) => {
                    tracing::warn!(status = %resp.status(), attempt, "approval webhook refused")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, attempt, "approval webhook failed"),
                Err(_) => tracing::warn!(attempt, "approval webhook timed out"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        tracing::error!("approval webhook gave up after {ATTEMPTS} attempts");
    });
}

fn webhook_client() -> Option<crate::forward::UpstreamClient> {
    static CLIENT: std::sync::OnceLock<Option<crate::forward::UpstreamClient>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| crate::forward::system_client().ok())
        .clone()
}
