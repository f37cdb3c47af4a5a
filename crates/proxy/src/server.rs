//! Listeners and lifecycle: start every component, accept mTLS connections, serve
//! the admin API, run the background loops, and shut down in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use chaperone_audit::{AuditEvent, AuditLog, AuditOptions, AuditSink as AuditSinkKind};
use chaperone_config::{AuditSink, Config};
use chaperone_identity::ServerTls;
use chaperone_policy::{EngineChoice, PolicyHandle, PolicyOptions, PolicyWatcher};
use chaperone_sessions::EndReason;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::approvals::Approvals;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::pipeline::ConnInfo;
use crate::sidecar::{session_store, CredentialAudit, Routing, Sidecar};
use crate::sniff::{Sniffed, Verdicts};

/// Options for embedding (tests, demo) vs running as the process.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Install SIGHUP (reload) handling. Only the real process should.
    pub handle_signals: bool,
}

/// A started sidecar.
pub struct Running {
    pub agent_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub sidecar: Arc<Sidecar>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    audit_task: Option<JoinHandle<()>>,
    watcher: Option<PolicyWatcher>,
}

/// Start the sidecar: every component is loaded before the listeners accept, and
/// any error is returned (nothing half-started keeps running).
/// The policy loading options a `policy` config section asks for.
pub fn policy_options(cfg: &chaperone_config::PolicyConfig) -> PolicyOptions {
    PolicyOptions {
        eval_timeout: cfg.timeout,
        engine: match cfg.engine {
            chaperone_config::PolicyEngine::Compiled => EngineChoice::Compiled,
            chaperone_config::PolicyEngine::Interpreter => EngineChoice::Interpreter,
        },
    }
}

pub async fn start(cfg: Config, opts: StartOptions) -> Result<Running, ProxyError> {
    let metrics = Arc::new(Metrics::new());
    let tls = ServerTls::load(&cfg.tls)?;
    metrics.cert_expiry.set(tls.cert_not_after());
    let policy = Arc::new(PolicyHandle::new(
        cfg.policy.paths.clone(),
        policy_options(&cfg.policy),
    )?);
    let routing = Routing::build(&cfg)?;
    let sink = match &cfg.audit.sink {
        None => AuditSinkKind::Discard,
        Some(AuditSink::Stdout) => AuditSinkKind::Stdout,
        Some(AuditSink::File(p)) => AuditSinkKind::File(p.clone()),
    };
    let mut audit_opts = AuditOptions::new(sink);
    audit_opts.buffer = cfg.audit.buffer;
    audit_opts.rotate_bytes = cfg.audit.rotate_bytes;
    let (audit, audit_task) = AuditLog::start(audit_opts)?;
    routing.credentials.set_observer(Arc::new(CredentialAudit {
        audit: audit.clone(),
        metrics: metrics.clone(),
    }));

    let agent = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ProxyError::Bind {
            what: "agent listener",
            addr: cfg.listen,
            source,
        })?;
    let admin = TcpListener::bind(cfg.admin)
        .await
        .map_err(|source| ProxyError::Bind {
            what: "admin listener",
            addr: cfg.admin,
            source,
        })?;
    let agent_addr = agent
        .local_addr()
        .map_err(|e| ProxyError::Other(e.to_string()))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| ProxyError::Other(e.to_string()))?;

    let sweep_every = cfg.sessions.sweep_interval;
    let tls_reload = cfg.tls.reload;
    let policy_reload = cfg.policy.reload;
    let max_conns = cfg.limits.max_connections;
    let sc = Arc::new(Sidecar {
        config: ArcSwap::from_pointee(cfg),
        routing: ArcSwap::from_pointee(routing),
        policy,
        sessions: session_store(),
        audit,
        approvals: Approvals::new(),
        metrics,
        tls,
        ready: AtomicBool::new(false),
        started: Instant::now(),
        hidden_tools: Default::default(),
        tls_refusals: Mutex::new(HashMap::new()),
    });
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(accept_loop(
        sc.clone(),
        agent,
        rx.clone(),
        Arc::new(Semaphore::new(max_conns)),
    )));
    tasks.push(tokio::spawn(admin_loop(sc.clone(), admin, rx.clone())));
    tasks.push(tokio::spawn(every(sweep_every, rx.clone(), {
        let sc = sc.clone();
        move || {
            let sc = sc.clone();
            async move { sc.sweep().await }
        }
    })));
    tasks.push(tokio::spawn(every(tls_reload, rx.clone(), {
        let sc = sc.clone();
        move || {
            let sc = sc.clone();
            async move {
                match sc.tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(not_after = sc.tls.cert_not_after(), "serving SVID reloaded");
                        sc.metrics.cert_expiry.set(sc.tls.cert_not_after());
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "SVID reload failed; keeping the current certificate"),
                }
            }
        }
    })));
    let watcher = {
        let weak = Arc::downgrade(&sc);
        let rt = tokio::runtime::Handle::current();
        PolicyWatcher::spawn(sc.policy.clone(), policy_reload, move |outcome| {
            if let Some(sc) = weak.upgrade() {
                let outcome = outcome.clone();
                rt.spawn(async move { sc.after_policy_reload(&outcome).await });
            }
        })
    };
    tasks.push(tokio::spawn(every(Duration::from_secs(10), rx.clone(), {
        let sc = sc.clone();
        move || {
            let sc = sc.clone();
            async move { flush_tls_refusals(&sc) }
        }
    })));
    if opts.handle_signals {
        tasks.push(tokio::spawn(sighup_loop(sc.clone(), rx.clone())));
    }
    // The policy in force from the start, so every later record's revision is anchored.
    let mut ev = AuditEvent::new("policy.reloaded");
    ev.decision = Some("loaded".into());
    let current = sc.policy.current();
    ev.detail = Some(serde_json::json!({
        "initial": true,
        "files": current.files().len(),
        "engine": current.engine_kind(),
        "engine_fallback": current.engine_fallback(),
    }));
    ev.policy_revision = Some(current.revision().to_owned());
    sc.audit(ev);
    sc.set_ready();
    tracing::info!(%agent_addr, %admin_addr, revision = %current.revision(), engine = current.engine_kind(), "chaperone sidecar ready");
    Ok(Running {
        agent_addr,
        admin_addr,
        sidecar: sc,
        shutdown,
        tasks,
        audit_task: Some(audit_task),
        watcher: Some(watcher),
    })
}

impl Running {
    /// Graceful shutdown: stop accepting, drain connections (bounded), end every
    /// session (revoking credentials), flush the audit log.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(w) = self.watcher.take() {
            w.stop();
        }
        let sc = self.sidecar.clone();
        sc.ready.store(false, std::sync::atomic::Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        for s in sc.sessions.list() {
            if s.parent.is_none() && !s.is_ended() {
                sc.end_session(&s.id, EndReason::Shutdown).await;
            }
        }
        sc.routing
            .load()
            .credentials
            .shutdown(Duration::from_secs(5))
            .await;
        flush_tls_refusals(&sc);
        let _ = tokio::time::timeout(Duration::from_secs(5), sc.audit.flush()).await;
        if let Some(t) = self.audit_task.take() {
            t.abort();
        }
        tracing::info!("chaperone stopped");
    }
}

/// Run until `stop` resolves (the process entry point passes SIGTERM/ctrl-c).
pub async fn run(
    cfg: Config,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    let running = start(
        cfg,
        StartOptions {
            handle_signals: true,
        },
    )
    .await?;
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => f().await,
            _ = stop.changed() => return,
        }
    }
}

#[cfg(unix)]
async fn sighup_loop(sc: Arc<Sidecar>, mut stop: watch::Receiver<bool>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("SIGHUP handler could not be installed");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config and policy");
                if let Err(e) = sc.reload_config().await {
                    tracing::error!(error = %e, "reload failed; keeping the running config and policy");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(not(unix))]
async fn sighup_loop(_sc: Arc<Sidecar>, _stop: watch::Receiver<bool>) {}

fn flush_tls_refusals(sc: &Sidecar) {
    let counts = std::mem::take(&mut *sc.tls_refusals.lock());
    if counts.is_empty() {
        return;
    }
    let total: u64 = counts.values().sum();
    let mut ev = AuditEvent::new("tls.refused");
    ev.detail = Some(serde_json::json!({"total": total, "by_reason": counts}));
    sc.audit(ev);
}

async fn accept_loop(
    sc: Arc<Sidecar>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    limit: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let sc = sc.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            sc.metrics.connections_active.inc();
            serve_conn(&sc, tcp, peer, stop).await;
            sc.metrics.connections_active.dec();
            drop(permit);
        });
    }
}

fn short_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.chars().take(160).collect()
}

async fn serve_conn(
    sc: &Arc<Sidecar>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let header_timeout = sc.cfg().limits.header_timeout;
    let acceptor = sc.tls.acceptor();
    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            sc.metrics.tls_handshake_failures.inc();
            *sc.tls_refusals.lock().entry(short_reason(&e)).or_default() += 1;
            tracing::debug!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            sc.metrics.tls_handshake_failures.inc();
            *sc.tls_refusals
                .lock()
                .entry("handshake timeout".into())
                .or_default() += 1;
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let is_h2 = conn.alpn_protocol() == Some(b"h2");
    let svid = match conn.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => chaperone_identity::validate_svid_leaf(leaf.as_ref()),
        None => {
            sc.metrics.tls_handshake_failures.inc();
            return;
        }
    };
    let svid = match svid {
        Ok(s) => s,
        Err(e) => {
            sc.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, error = %e, "peer certificate is not a valid SVID");
            return;
        }
    };
    let verdicts = if is_h2 {
        None
    } else {
        Some(Arc::new(Verdicts::default()))
    };
    let info = Arc::new(ConnInfo::new(
        svid.id,
        svid.not_after,
        peer,
        verdicts.clone(),
    ));
    let svc_sc = sc.clone();
    let svc = service_fn(move |req| crate::pipeline::handle(svc_sc.clone(), info.clone(), req));
    let limits = sc.cfg().limits.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let result = match verdicts {
        Some(v) => {
            let io = TokioIo::new(Sniffed::new(tls, v));
            let conn = builder.serve_connection(io, svc);
            drive(conn, &mut stop).await
        }
        None => {
            let io = TokioIo::new(tls);
            let conn = builder.serve_connection(io, svc);
            drive(conn, &mut stop).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

type ServeResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn drive<C>(conn: C, stop: &mut watch::Receiver<bool>) -> ServeResult
where
    C: std::future::Future<Output = ServeResult> + GracefulConn,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful();
            match tokio::time::timeout(Duration::from_secs(10), conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    }
}

/// Abstracts `graceful_shutdown` over the two connection types.
trait GracefulConn {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper_util::server::conn::auto::Connection<'_, I, S, TokioExecutor>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn admin_loop(sc: Arc<Sidecar>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let sc = sc.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| crate::admin::handle(sc.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Now as unix seconds (for cert expiry checks).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
