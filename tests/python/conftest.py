"""Shared fixtures for the Python tests that drive the real chaperone binary.

Everything runs on 127.0.0.1: dev certificates from `chaperone dev certs`, MCP upstreams
built on the official MCP SDK (mcp_upstream_server.py), a webhook receiver
(http.server), and `chaperone run` itself. Every process is started with its output
captured to a log file, every wait has a timeout, every process is stopped in a
finalizer, and the logs of the processes a failing test used are attached to its report.

The binary is `$CHAPERONE_BIN`, else `<repo>/target/debug/chaperone` (build it with
`cargo build -p chaperone-cli`). A missing binary or SDK fails the tests; nothing skips.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TRUST_DOMAIN = "test.chaperone.local"
AGENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/agents/sa/mcp-agent"
AGENT_NAME = "mcp-agent"
POLICIES_MCP = HERE / "policies_mcp"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Processes (and their logs) the current test has used; attached to its report on failure.
_LIVE: list["Proc"] = []


def chaperone_binary() -> Path:
    """The sidecar binary under test; fails (never skips) when it is missing."""
    env = os.environ.get("CHAPERONE_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "chaperone"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"chaperone binary not found at {path} (set CHAPERONE_BIN, or run "
            "`cargo build -p chaperone-cli` in the repository)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `pred` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    extra = f" (last error: {type(last_exc).__name__}: {last_exc})" if last_exc else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}{extra}", pytrace=False)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Proc:
    """A child process with stdout+stderr captured to a file; stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            pytest.fail(
                f"{self.name} exited with status {self.popen.returncode}:\n{self.logs()}",
                pytrace=False,
            )

    def logs(self, tail: int = 8000) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<log unreadable: {exc}>"
        return _ANSI.sub("", text)[-tail:]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit status."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _LIVE:
        for p in _LIVE:
            rep.sections.append((f"{p.name} log ({p.log_path})", p.logs()))


# --------------------------------------------------------------------------------------------
# Certificates


@dataclass
class Certs:
    dir: Path
    ca: Path
    bundle: Path
    sidecar_cert: Path
    sidecar_key: Path
    agent_cert: Path
    agent_key: Path

    def agent_ssl(self) -> ssl.SSLContext:
        """Client context: trusts the dev CA, presents the agent's SVID."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.agent_cert), str(self.agent_key))
        return ctx

    def anonymous_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="session")
def chaperone_bin() -> Path:
    return chaperone_binary()


@pytest.fixture(scope="session")
def certs(chaperone_bin: Path, tmp_path_factory) -> Certs:
    out = tmp_path_factory.mktemp("certs")
    r = subprocess.run(
        [str(chaperone_bin), "dev", "certs", "--out", str(out), "--trust-domain", TRUST_DOMAIN,
         "--id", AGENT_ID],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, f"chaperone dev certs failed: {r.stdout}\n{r.stderr}"
    c = Certs(
        dir=out, ca=out / "ca.pem", bundle=out / "bundle.pem",
        sidecar_cert=out / "sidecar.pem", sidecar_key=out / "sidecar_key.pem",
        agent_cert=out / f"{AGENT_NAME}.pem", agent_key=out / f"{AGENT_NAME}_key.pem",
    )
    for p in (c.ca, c.bundle, c.sidecar_cert, c.sidecar_key, c.agent_cert, c.agent_key):
        assert p.is_file(), f"chaperone dev certs did not write {p}: {sorted(os.listdir(out))}"
    return c


# --------------------------------------------------------------------------------------------
# MCP upstreams (official SDK)


@dataclass
class Upstream:
    proc: Proc
    port: int
    json_response: bool

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self) -> list[dict]:
        """The tools/call lines the upstream printed (calls that reached a tool)."""
        out = []
        for line in self.proc.logs(tail=10**7).splitlines():
            if line.startswith("{"):
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if v.get("event") == "tools/call":
                    out.append(v)
        return out


def start_upstream(log_dir: Path, name: str, json_response: bool) -> Upstream:
    try:
        import mcp  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the official MCP SDK is required: pip install 'mcp>=1.9' ({exc})", pytrace=False)
    port = free_port()
    argv = [sys.executable, str(HERE / "mcp_upstream_server.py"), str(port)]
    if json_response:
        argv.append("--json-response")
    p = Proc(name, argv, log_dir, env={"PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        p.check_alive()
        if port_open(port):
            return Upstream(p, port, json_response)
        time.sleep(0.05)
    p.stop()
    pytest.fail(f"{name} did not listen on 127.0.0.1:{port} within 20s:\n{p.logs()}", pytrace=False)


# --------------------------------------------------------------------------------------------
# Webhook receiver


class WebhookServer:
    """Records every POSTed JSON body; answers 200."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_unparsed": raw.decode(errors="replace")}
                with outer.lock:
                    outer.received.append({"path": self.path,
                                           "content_type": self.headers.get("content-type"),
                                           "body": body})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict]:
        with self.lock:
            return [r["body"] for r in self.received]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------
# The sidecar


@dataclass
class Sidecar:
    proc: Proc
    port: int
    admin_port: int
    config_path: Path
    audit_path: Path
    bin: Path
    certs: Certs
    routes: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def mcp_url(self, route: str) -> str:
        """The agent-facing URL of an MCP route (prefix + the upstream's /mcp path)."""
        return f"{self.base}/{route}/mcp"

    def stop(self) -> int | None:
        return self.proc.stop()


def write_sidecar_config(
    path: Path, *, certs: Certs, port: int, admin_port: int, audit_path: Path,
    routes: dict[str, str], policy_dir: Path, approval_timeout: str = "2s",
    webhook: str | None = None, max_body_bytes: int = 65536,
) -> None:
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"admin: 127.0.0.1:{admin_port}",
        "tls:",
        f"  cert: {certs.sidecar_cert}",
        f"  key: {certs.sidecar_key}",
        f"  bundle: {certs.bundle}",
        f"  trust_domains: [{TRUST_DOMAIN}]",
        "identities:",
        f"  - match: spiffe://{TRUST_DOMAIN}/ns/agents/sa/*",
        "    attributes: {kind: mcp-agent, team: interop}",
        "routes:",
    ]
    for name, upstream in routes.items():
        lines += [
            f"  - name: {name}",
            f"    prefix: /{name}",
            f"    upstream: {upstream}",
            "    protocol: mcp",
            "    timeout: 20s",
            "    labels: {sensitivity: low}",
        ]
    lines += [
        "policy:",
        f"  paths: [{policy_dir}]",
        "sessions:",
        "  default_ttl: 10m",
        "  max_ttl: 1h",
        "approvals:",
        f"  timeout: {approval_timeout}",
    ]
    if webhook:
        lines.append(f"  webhook: {webhook}")
    lines += [
        "audit:",
        f"  path: {audit_path}",
        "limits:",
        f"  max_body_bytes: {max_body_bytes}",
    ]
    path.write_text("\n".join(lines) + "\n")


def start_sidecar(
    bin: Path, certs: Certs, work: Path, routes: dict[str, str], *, name: str = "chaperone",
    policy_dir: Path = POLICIES_MCP, **cfg: Any,
) -> Sidecar:
    import urllib.request

    work.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    config = work / f"{name}.yaml"
    audit = work / f"{name}-audit.jsonl"
    write_sidecar_config(config, certs=certs, port=port, admin_port=admin_port, audit_path=audit,
                         routes=routes, policy_dir=policy_dir, **cfg)
    p = Proc(name, [str(bin), "run", "--config", str(config)], work,
             env={"RUST_LOG": os.environ.get("CHAPERONE_TEST_LOG", "info")})

    def ready() -> bool:
        p.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 20, f"{name} GET /readyz == 200")
    except BaseException:
        p.stop()
        raise
    return Sidecar(p, port, admin_port, config, audit, bin, certs, routes)


# --------------------------------------------------------------------------------------------
# Module-wide topology for the MCP interop tests


@dataclass
class McpWorld:
    certs: Certs
    sidecar: Sidecar
    sse: Upstream
    json: Upstream
    webhook: WebhookServer
    work: Path


@pytest.fixture(scope="module")
def mcp_world(chaperone_bin: Path, certs: Certs, tmp_path_factory) -> McpWorld:
    """One SSE-mode and one JSON-mode SDK upstream behind one sidecar (routes `sse`, `json`),
    approvals.timeout 2s with a webhook, limits.max_body_bytes 65536."""
    work = tmp_path_factory.mktemp("mcp")
    started: list[Proc] = []
    hook = WebhookServer()
    try:
        sse = start_upstream(work, "upstream-sse", json_response=False)
        started.append(sse.proc)
        js = start_upstream(work, "upstream-json", json_response=True)
        started.append(js.proc)
        sc = start_sidecar(chaperone_bin, certs, work, {"sse": sse.url, "json": js.url},
                           approval_timeout="2s", webhook=hook.url, max_body_bytes=65536)
        started.append(sc.proc)
        yield McpWorld(certs, sc, sse, js, hook, work)
    finally:
        for p in reversed(started):
            p.stop()
        hook.close()


@pytest.fixture(autouse=True)
def _track_processes():
    """Attach only the processes alive during this test to its failure report."""
    before = list(_LIVE)
    _LIVE[:] = [p for p in before if p.alive()]
    yield
