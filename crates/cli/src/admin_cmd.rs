//! `chaperone admin ...`: the operator CLI over the admin API.

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Args, Clone)]
pub struct AdminUrl {
    /// Admin API base URL.
    #[arg(long = "admin", default_value = "http://127.0.0.1:15000")]
    url: String,
}

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Live sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// Calls held for approval.
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
}

#[derive(Subcommand)]
pub enum SessionsCmd {
    /// List live sessions.
    List(AdminUrl),
    /// End a session (and its delegations) and revoke its credentials.
    Revoke {
        id: String,
        #[command(flatten)]
        admin: AdminUrl,
    },
}

#[derive(Subcommand)]
pub enum ApprovalsCmd {
    /// List pending approvals.
    List(AdminUrl),
    /// Approve a held call.
    Approve {
        id: String,
        /// Who approves (recorded in the audit log).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        admin: AdminUrl,
    },
    /// Deny a held call.
    Deny {
        id: String,
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        admin: AdminUrl,
    },
}

async fn call(
    base: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut b = Request::builder().method(method).uri(&url);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("cannot reach the admin API at {base}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

/// `chaperone health`: GET /healthz or /readyz, bounded to 2 s.
pub async fn health(base: &str, ready: bool) -> Result<ExitCode, String> {
    let path = if ready { "/readyz" } else { "/healthz" };
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        call(base, Method::GET, path, None),
    )
    .await
    {
        Ok(Ok((200, _))) => Ok(ExitCode::SUCCESS),
        Ok(Ok((status, v))) => {
            eprintln!("{path}: {status} {v}");
            Ok(ExitCode::from(1))
        }
        Ok(Err(e)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
        Err(_) => {
            eprintln!("{path}: no answer within 2s");
            Ok(ExitCode::from(1))
        }
    }
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into())
}

pub async fn run(cmd: AdminCmd) -> Result<ExitCode, String> {
    let (status, v) = match cmd {
        AdminCmd::Sessions(SessionsCmd::List(a)) => {
            let (s, v) = call(&a.url, Method::GET, "/v1/sessions", None).await?;
            if s == 200 {
                let list = v["sessions"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no live sessions");
                }
                for x in list {
                    println!(
                        "{}  {}  expires {}  task: {}",
                        x["id"].as_str().unwrap_or("?"),
                        x["spiffe_id"].as_str().unwrap_or("?"),
                        x["expires_at"].as_str().unwrap_or("?"),
                        x["task"].as_str().unwrap_or("")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            (s, v)
        }
        AdminCmd::Sessions(SessionsCmd::Revoke { id, admin }) => {
            call(
                &admin.url,
                Method::DELETE,
                &format!("/v1/sessions/{id}"),
                None,
            )
            .await?
        }
        AdminCmd::Approvals(ApprovalsCmd::List(a)) => {
            let (s, v) = call(&a.url, Method::GET, "/v1/approvals", None).await?;
            if s == 200 {
                let list = v["approvals"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no pending approvals");
                }
                for x in list {
                    println!(
                        "{}  {}  {} {} (route {}{})  reasons: {}  expires {}",
                        x["id"].as_str().unwrap_or("?"),
                        x["spiffe_id"].as_str().unwrap_or("?"),
                        x["method"].as_str().unwrap_or("?"),
                        x["path"].as_str().unwrap_or("?"),
                        x["route"].as_str().unwrap_or("?"),
                        x["tool"]
                            .as_str()
                            .map(|t| format!(", tool {t}"))
                            .unwrap_or_default(),
                        x["reasons"]
                            .as_array()
                            .map(|r| r
                                .iter()
                                .filter_map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join("; "))
                            .unwrap_or_default(),
                        x["expires_at"].as_str().unwrap_or("?"),
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            (s, v)
        }
        AdminCmd::Approvals(ApprovalsCmd::Approve { id, by, admin }) => {
            call(
                &admin.url,
                Method::POST,
                &format!("/v1/approvals/{id}"),
                Some(serde_json::json!({"decision": "approve", "by": who(by)})),
            )
            .await?
        }
        AdminCmd::Approvals(ApprovalsCmd::Deny { id, by, admin }) => {
            call(
                &admin.url,
                Method::POST,
                &format!("/v1/approvals/{id}"),
                Some(serde_json::json!({"decision": "deny", "by": who(by)})),
            )
            .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
