//! A tiny, fast HTTP/1.1 upstream for `benches/run.sh` (not a criterion benchmark).
//!
//! `upstream serve 127.0.0.1:PORT` answers every request with `200 {"ok":true}` on a
//! current-thread tokio runtime. With any other arguments (e.g. when
//! `cargo test --all-targets` or `cargo bench` runs it) it exits at once.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BODY: &[u8] = br#"{"ok":true}"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("serve"), Some(a)) => a.clone(),
        _ => return,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upstream: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve(&addr)) {
        eprintln!("upstream: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(BODY)))
                        .unwrap_or_default(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
