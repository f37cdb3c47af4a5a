"""MCP and approval interop through the REAL sidecar binary (`chaperone run`).

Topology (all 127.0.0.1, see conftest.py): two upstreams built on the official MCP SDK
(tests/python/mcp_upstream_server.py), one answering with SSE, one with JSON
(`--json-response`), behind one sidecar with the routes `sse` and `json`
(`protocol: mcp`), the test policy in tests/python/policies_mcp/, approvals.timeout 2s,
an approval webhook (a Python http.server) and limits.max_body_bytes 65536.
The agent talks mTLS with the SVID minted by `chaperone dev certs`.

Covered: the official SDK client (tests/python/mcp_client_check.py, a real process)
initialize / filtered tools/list / allowed and denied tools/call / SSE streaming with
progress in both server modes; hidden tools denied on call; argument-based policy; strict
request rejections (400 + JSON-RPC error); approvals (approve, deny, timeout, agent
disconnect, single use, one approval per exact body, webhook, `chaperone admin approvals`);
the audit hash chain (`chaperone audit verify`).

Run: python3 -m pytest -q tests/python/test_mcp_interop.py  (CHAPERONE_BIN selects the binary)
Requirements: pip install 'mcp>=1.9' httpx pytest. Nothing is skipped when missing.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    AGENT_ID,
    HERE,
    POLICIES_MCP,
    McpWorld,
    start_sidecar,
    wait_for,
)

try:
    import httpx
except ImportError:  # pragma: no cover - a broken environment fails below, never skips
    httpx = None

PROTOCOL_VERSION = "2025-06-18"
INTENT_TOOLS = ["search_docs", "delete_file", "create_refund", "slow_count"]
LISTED = sorted(INTENT_TOOLS)  # read_file is not in the intent, so it must be hidden
ALL_UPSTREAM_TOOLS = sorted(INTENT_TOOLS + ["read_file"])
DENY_DELETE = 'delete_file may only delete paths under /tmp/task-, not "/etc/secret"'


@pytest.fixture(scope="module", autouse=True)
def _require_httpx():
    if httpx is None:
        pytest.fail("httpx is required: pip install httpx", pytrace=False)


# --------------------------------------------------------------------------------------------
# Helpers


def agent_client(world: McpWorld, timeout: float = 15.0) -> "httpx.Client":
    return httpx.Client(verify=world.certs.agent_ssl(), timeout=timeout)


def create_session(world: McpWorld, tools: list[str] | None = None, task: str = "interop test") -> str:
    body = {
        "task": task,
        "intent": {"summary": "exercise MCP through chaperone", "tools": tools if tools is not None else INTENT_TOOLS},
        "scopes": ["docs:read"],
        "ttl": "10m",
    }
    with agent_client(world) as c:
        r = c.post(f"{world.sidecar.base}/.chaperone/v1/sessions", json=body)
    assert r.status_code == 201, f"session creation: {r.status_code} {r.text}"
    token = r.json()["token"]
    assert isinstance(token, str) and len(token) >= 22
    return token


def sse_messages(text: str) -> list[dict]:
    """JSON-RPC messages of an SSE body (events joined like an SSE client does)."""
    out, data = [], []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data:
                payload = "\n".join(data)
                if payload.strip():
                    out.append(json.loads(payload))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data and "\n".join(data).strip():
        out.append(json.loads("\n".join(data)))
    return out


class RawMcp:
    """A minimal streamable-HTTP MCP client over httpx with the agent's certificate: sends
    exact bytes, so rejections and approvals can be checked at the HTTP level."""

    def __init__(self, world: McpWorld, route: str, token: str | None, timeout: float = 15.0):
        self.world = world
        self.url = world.sidecar.mcp_url(route)
        self.token = token
        self.session_id: str | None = None
        self.client = agent_client(world, timeout)
        self._next_id = 100

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RawMcp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
             "mcp-protocol-version": PROTOCOL_VERSION}
        if self.token:
            h["chaperone-session"] = self.token
        if self.session_id:
            h["mcp-session-id"] = self.session_id
        h.update(extra or {})
        return h

    def post_raw(self, body: bytes, headers: dict[str, str] | None = None) -> "httpx.Response":
        return self.client.post(self.url, content=body, headers=self.headers(headers))

    def request(self, method: str, params: dict | None = None) -> tuple["httpx.Response", dict | None]:
        self._next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            msg["params"] = params
        r = self.post_raw(json.dumps(msg).encode())
        return r, self.answer(r, self._next_id)

    @staticmethod
    def answer(r: "httpx.Response", rid: Any) -> dict | None:
        ct = r.headers.get("content-type", "")
        if ct.startswith("text/event-stream"):
            for m in sse_messages(r.text):
                if m.get("id") == rid and ("result" in m or "error" in m):
                    return m
            return None
        if ct.startswith("application/json") and r.content:
            return r.json()
        return None

    def initialize(self) -> dict:
        r, m = self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "chaperone-raw-test", "version": "0"},
        })
        assert r.status_code == 200, f"initialize: {r.status_code} {r.text}"
        assert m is not None and "result" in m, f"initialize answer: {r.text}"
        self.session_id = r.headers.get("mcp-session-id")
        n = self.post_raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
        assert n.status_code == 202, f"notifications/initialized: {n.status_code} {n.text}"
        return m["result"]

    def call_tool(self, name: str, arguments: dict) -> tuple["httpx.Response", dict | None]:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def call_tool_body(self, name: str, arguments: dict, rid: int) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                           "params": {"name": name, "arguments": arguments}}).encode()


def tool_text(m: dict) -> str:
    return "\n".join(c.get("text", "") for c in m["result"].get("content", []))


def assert_jsonrpc_refusal(r: "httpx.Response", status: int, code: int, error: str, rid: Any) -> dict:
    assert r.status_code == status, f"expected HTTP {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body.get("jsonrpc") == "2.0", body
    assert body.get("id") == rid, body
    assert "result" not in body, body
    err = body["error"]
    assert err["code"] == code, body
    assert err["data"]["error"] == error, body
    assert err["data"]["request_id"] == r.headers.get("x-request-id"), (body, r.headers)
    return err


def approvals(world: McpWorld) -> list[dict]:
    r = httpx.get(f"{world.sidecar.admin}/v1/approvals", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["approvals"]


def wait_approval(world: McpWorld, pred, what: str, timeout: float = 5.0) -> dict:
    def find():
        for a in approvals(world):
            if pred(a):
                return a
        return None
    return wait_for(find, timeout, what)


def resolve(world: McpWorld, approval_id: str, decision: str, by: str = "pytest") -> "httpx.Response":
    return httpx.post(f"{world.sidecar.admin}/v1/approvals/{approval_id}",
                      json={"decision": decision, "by": by}, timeout=5)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class HeldCall:
    """A tools/call sent on its own connection from a worker thread (it blocks while held)."""

    def __init__(self, pool: concurrent.futures.Executor, world: McpWorld, route: str, token: str,
                 session_id: str | None, name: str, arguments: dict, rid: int):
        self.raw = RawMcp(world, route, token, timeout=15)
        self.raw.session_id = session_id
        self.rid = rid
        self.body = self.raw.call_tool_body(name, arguments, rid)
        self.sent_at = time.monotonic()
        self.future = pool.submit(self.raw.post_raw, self.body)

    def result(self, timeout: float = 10.0) -> tuple["httpx.Response", dict | None]:
        try:
            r = self.future.result(timeout=timeout)
        finally:
            self.raw.close()
        return r, RawMcp.answer(r, self.rid)


def run_sdk_client(world: McpWorld, route: str, token: str, *extra: str) -> dict:
    argv = [
        sys.executable, str(HERE / "mcp_client_check.py"), world.sidecar.mcp_url(route),
        "--ca", str(world.certs.ca), "--cert", str(world.certs.agent_cert),
        "--key", str(world.certs.agent_key), "--session-token", token, *extra,
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"mcp_client_check.py printed no JSON (rc {r.returncode}):\n{r.stdout}\n{r.stderr}")
    out["_rc"] = r.returncode
    out["_stderr"] = r.stderr[-4000:]
    return out


# --------------------------------------------------------------------------------------------
# The test policy itself


def test_test_policy_unit_tests_pass(chaperone_bin):
    r = subprocess.run([str(chaperone_bin), "policy", "test", str(POLICIES_MCP)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "0 failed" in r.stdout and " passed" in r.stdout, r.stdout


# --------------------------------------------------------------------------------------------
# Official SDK client <-> official SDK server, through the sidecar


@pytest.mark.parametrize("route", ["sse", "json"])
def test_sdk_client_through_sidecar(mcp_world: McpWorld, route: str):
    token = create_session(mcp_world, task=f"sdk interop over {route}")
    extra = ["--expect-tools", ",".join(LISTED), "--slow", "5"]
    if route == "sse":
        extra.append("--expect-progress")  # progress notifications need an SSE response
    out = run_sdk_client(mcp_world, route, token, *extra)
    ctx = json.dumps(out, indent=1)

    # initialize reached the real upstream
    assert out.get("server", {}).get("name") == "chaperone-test-upstream", ctx
    assert out.get("protocol_version"), ctx
    # tools/list is filtered: read_file (not in the session's intent) is hidden
    assert out["tools"] == LISTED, ctx
    # an allowed call works and its result is the upstream's
    assert out["allowed_call"]["ok"] is True, ctx
    assert "Refunds over 100 EUR" in out["allowed_call"]["text"], ctx
    # a denied call surfaces in the SDK as a JSON-RPC error carrying the policy reason
    denied = out["denied_call"]
    assert denied["ok"] is False, ctx
    err = denied["error"]
    assert err["code"] == -32001, ctx
    assert DENY_DELETE in err["message"], ctx
    assert err["data"]["error"] == "denied", ctx
    assert DENY_DELETE in err["data"]["reasons"], ctx
    # streaming: slow_count's result (and, over SSE, each progress notification) arrives
    slow = out["slow_call"]
    assert slow["ok"] is True and slow["text"] == "counted to 5", ctx
    if route == "sse":
        assert slow["progress_events"] == 5, ctx
    assert out["failures"] == [] and out["_rc"] == 0, ctx

    upstream = mcp_world.sse if route == "sse" else mcp_world.json
    paths = [c["arguments"].get("path") for c in upstream.calls() if c["tool"] == "delete_file"]
    assert "/etc/secret" not in paths, "a denied call reached the upstream"


def test_sdk_denial_message_has_documented_prefix(mcp_world: McpWorld):
    """docs/mcp.md: a policy denial's message is `denied: <reason>; <reason>`, and
    mcp_client_check.py --expect-denied relies on it."""
    token = create_session(mcp_world)
    out = run_sdk_client(mcp_world, "json", token, "--expect-denied")
    assert out["denied_call"]["denied"] is True, json.dumps(out, indent=1)
    assert out["denied_call"]["error"]["message"] == f"denied: {DENY_DELETE}", json.dumps(out, indent=1)
    assert out["_rc"] == 0, json.dumps(out, indent=1)


# --------------------------------------------------------------------------------------------
# Hidden tools and argument-based policy


@pytest.mark.parametrize("route", ["sse", "json"])
def test_hidden_tool_is_denied_on_call(mcp_world: McpWorld, route: str):
    upstream = mcp_world.sse if route == "sse" else mcp_world.json
    # The upstream itself offers read_file (asked directly, without the sidecar).
    with httpx.Client(timeout=10) as direct:
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "d", "version": "0"}}}
        r = direct.post(f"{upstream.url}/mcp", json=init, headers=h)
        assert r.status_code == 200, r.text
        h["mcp-session-id"] = r.headers["mcp-session-id"]
        direct.post(f"{upstream.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
        r = direct.post(f"{upstream.url}/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=h)
        m = RawMcp.answer(r, 2)
        assert m is not None and sorted(t["name"] for t in m["result"]["tools"]) == ALL_UPSTREAM_TOOLS, r.text

    before = len([c for c in upstream.calls() if c["tool"] == "read_file"])
    token = create_session(mcp_world)
    with RawMcp(mcp_world, route, token) as mcp:
        mcp.initialize()
        r, m = mcp.request("tools/list")
        assert r.status_code == 200 and m is not None, r.text
        listed = [t["name"] for t in m["result"]["tools"]]
        assert sorted(listed) == LISTED, m
        # every tool kept its schema untouched
        assert all("inputSchema" in t for t in m["result"]["tools"]), m

        r, _ = mcp.call_tool("read_file", {"path": "/docs/readme.txt"})
        err = assert_jsonrpc_refusal(r, 403, -32001, "denied", mcp._next_id)
        assert "read_file" in err["message"], err
        assert err["data"]["reasons"], err

    # Without a tools/list first, the policy's own reason is returned.
    token2 = create_session(mcp_world)
    with RawMcp(mcp_world, route, token2) as mcp:
        mcp.initialize()
        r, _ = mcp.call_tool("read_file", {"path": "/docs/readme.txt"})
        err = assert_jsonrpc_refusal(r, 403, -32001, "denied", mcp._next_id)
        assert "tool read_file is not in the session's declared intent" in err["data"]["reasons"], err

    after = len([c for c in upstream.calls() if c["tool"] == "read_file"])
    assert after == before, "a hidden tool's call reached the upstream"


@pytest.mark.parametrize(
    "arguments, allowed",
    [
        ({"path": "/tmp/task-42/notes.txt"}, True),
        ({"path": "/tmp/task-"}, True),
        ({"path": "/etc/secret"}, False),
        ({"path": "/tmp/task"}, False),
        ({"path": "/tmp/other/task-1"}, False),
        ({"path": ["/tmp/task-1"]}, False),  # not a string: fails closed
        ({"path": 7}, False),
    ],
    ids=["task-dir", "task-prefix", "etc", "no-dash", "elsewhere", "array", "number"],
)
def test_delete_file_argument_policy(mcp_world: McpWorld, arguments: dict, allowed: bool):
    token = create_session(mcp_world)
    with RawMcp(mcp_world, "json", token) as mcp:
        mcp.initialize()
        before = len(mcp_world.json.calls())
        r, m = mcp.call_tool("delete_file", arguments)
        if allowed:
            assert r.status_code == 200, r.text
            assert m is not None and "result" in m, r.text
            assert tool_text(m) == f"deleted {arguments['path']}", m
            calls = mcp_world.json.calls()[before:]
            assert {"event": "tools/call", "tool": "delete_file", "arguments": arguments} in calls
        else:
            err = assert_jsonrpc_refusal(r, 403, -32001, "denied", mcp._next_id)
            assert err["data"]["reasons"], err
            if isinstance(arguments["path"], str):
                want = f"delete_file may only delete paths under /tmp/task-, not {json.dumps(arguments['path'])}"
                assert want in err["data"]["reasons"], err
            assert not [c for c in mcp_world.json.calls()[before:] if c["tool"] == "delete_file"]


def test_no_session_is_denied(mcp_world: McpWorld):
    with RawMcp(mcp_world, "json", None) as mcp:
        r, _ = mcp.request("tools/list")
        err = assert_jsonrpc_refusal(r, 403, -32001, "denied", mcp._next_id)
        assert "a session is required on MCP routes" in err["data"]["reasons"], err


# --------------------------------------------------------------------------------------------
# Strict request inspection: rejected whole, 400 + JSON-RPC error, never forwarded

OVERSIZE = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                       "params": {"name": "search_docs", "arguments": {"query": "x" * 70000}}}).encode()

REJECTIONS = {
    # name: (body, extra headers, documented reason, documented JSON-RPC code, id, message fragment)
    "batch": (b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]', {}, "batch", -32600, None, "batch"),
    "duplicate_key": (b'{"jsonrpc":"2.0","id":2,"method":"tools/list","method":"tools/call"}', {},
                      "duplicate_key", -32600, None, "duplicate"),
    "duplicate_key_escaped": (b'{"jsonrpc":"2.0","id":2,"method":"tools/list","\\u006dethod":"x"}', {},
                              "duplicate_key", -32600, None, "duplicate"),
    "non_canonical_Method": (b'{"jsonrpc":"2.0","id":3,"Method":"tools/list"}', {},
                             "non_canonical_key", -32600, None, "non-canonical"),
    "non_canonical_Name": (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search_docs",'
                           b'"Name":"delete_file","arguments":{}}}', {}, "non_canonical_key", -32600, None,
                           "non-canonical"),
    "invalid_utf8": (b'{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"x":"\xff\xfe"}}', {},
                     "invalid_utf8", -32700, None, "UTF-8"),
    "nul_in_tool_name": (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"search_docs\\u0000",'
                         b'"arguments":{}}}', {}, "control_character", -32600, 5, "control"),
    "gzip": (gzip.compress(b'{"jsonrpc":"2.0","id":6,"method":"tools/list"}'), {"content-encoding": "gzip"},
             "unsupported_content_encoding", -32600, None, "Content-Encoding"),
    "text_plain": (b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}', {"content-type": "text/plain"},
                   "unsupported_content_type", -32600, None, "Content-Type"),
    "over_size": (OVERSIZE, {}, "too_large", -32600, None, "65536"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejected_requests(mcp_world: McpWorld, case: str):
    body, headers, _reason, _code, rid, fragment = REJECTIONS[case]
    token = create_session(mcp_world)
    before = len(mcp_world.json.calls())
    with RawMcp(mcp_world, "json", token) as mcp:
        r = mcp.post_raw(body, headers)
    assert r.status_code == 400, f"{case}: {r.status_code} {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    msg = r.json()
    assert msg["jsonrpc"] == "2.0" and "result" not in msg, msg
    # The id is echoed when the body parsed far enough to know it, else null.
    assert msg["id"] in (rid, None), msg
    err = msg["error"]
    assert isinstance(err["code"], int) and -32768 <= err["code"] <= -32000, msg
    assert fragment.lower() in err["message"].lower(), msg
    assert len(mcp_world.json.calls()) == before, "a rejected request reached the upstream"


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejection_body_matches_docs(mcp_world: McpWorld, case: str):
    """docs/mcp.md 'Rejections' / 'JSON-RPC error responses': each rejection has its code
    and `data: {"reason": "<reason>"}`."""
    body, headers, reason, code, _rid, _fragment = REJECTIONS[case]
    token = create_session(mcp_world)
    with RawMcp(mcp_world, "json", token) as mcp:
        r = mcp.post_raw(body, headers)
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err.get("data", {}).get("reason") == reason, err


# --------------------------------------------------------------------------------------------
# Approvals


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        yield ex


def open_mcp(world: McpWorld, route: str) -> tuple[str, str | None]:
    token = create_session(world, task=f"approvals over {route}")
    with RawMcp(world, route, token) as mcp:
        mcp.initialize()
        return token, mcp.session_id


@pytest.mark.parametrize("route", ["json", "sse"])
def test_approval_approve_proceeds_once(mcp_world: McpWorld, pool, route: str):
    token, sid = open_mcp(mcp_world, route)
    order = f"o-approve-{route}-{time.time_ns()}"
    held = HeldCall(pool, mcp_world, route, token, sid, "create_refund", {"order_id": order, "amount": 42}, 11)
    a = wait_approval(mcp_world, lambda a: order in " ".join(a["reasons"]), "the approval to be listed")

    assert a["id"].startswith("apr_"), a
    assert a["spiffe_id"] == AGENT_ID, a
    assert a["session_id"], a
    assert a["route"] == route and a["method"] == "POST" and a["path"] == f"/{route}/mcp", a
    assert a["tool"] == "create_refund", a
    assert a["body_sha256"] == sha256(held.body), a
    assert f"refund of 42 for order {order} needs a human approver" in a["reasons"], a
    assert not held.future.done(), "the call did not wait for the approval"
    upstream = mcp_world.sse if route == "sse" else mcp_world.json
    assert not [c for c in upstream.calls() if c["arguments"].get("order_id") == order], \
        "a held call reached the upstream before approval"

    ok = resolve(mcp_world, a["id"], "approve", by="alice")
    assert ok.status_code == 200, ok.text
    assert ok.json()["decision"] == "approve" and ok.json()["by"] == "alice", ok.text

    r, m = held.result()
    assert r.status_code == 200, r.text
    assert m is not None and "result" in m, r.text
    assert json.loads(tool_text(m))["refund_id"] == f"rf-{order}", m
    assert [c for c in upstream.calls() if c["arguments"].get("order_id") == order] == [
        {"event": "tools/call", "tool": "create_refund", "arguments": {"order_id": order, "amount": 42}}]

    # single use: the id is gone
    again = resolve(mcp_world, a["id"], "approve", by="alice")
    assert again.status_code == 404, again.text
    assert again.json()["error"] == "not_found", again.text
    assert all(x["id"] != a["id"] for x in approvals(mcp_world))


@pytest.mark.parametrize("route", ["sse", "json"])
def test_sdk_client_held_calls(mcp_world: McpWorld, route: str):
    """The official SDK client waits on a held call: approved -> its result, denied -> an
    McpError with -32002 / approval_denied."""
    token = create_session(mcp_world, task=f"sdk approvals over {route}")
    order = f"o-sdk-{route}-{time.time_ns()}"
    argv = [
        sys.executable, str(HERE / "mcp_client_check.py"), mcp_world.sidecar.mcp_url(route),
        "--ca", str(mcp_world.certs.ca), "--cert", str(mcp_world.certs.agent_cert),
        "--key", str(mcp_world.certs.agent_key), "--session-token", token,
        "--extra-call", "create_refund=" + json.dumps({"order_id": order, "amount": 1}),
        "--extra-call", "create_refund=" + json.dumps({"order_id": order, "amount": 2}),
    ]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_approval(mcp_world, lambda a: f"refund of 1 for order {order}" in " ".join(a["reasons"]),
                              "the SDK client's first held call", timeout=15)
        assert resolve(mcp_world, first["id"], "approve", by="sdk-approver").status_code == 200
        second = wait_approval(mcp_world, lambda a: f"refund of 2 for order {order}" in " ".join(a["reasons"]),
                               "the SDK client's second held call", timeout=15)
        assert resolve(mcp_world, second["id"], "deny", by="sdk-denier").status_code == 200
        stdout, stderr = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate(timeout=5)
    out = json.loads(stdout)
    ctx = json.dumps(out, indent=1) + "\n" + stderr[-2000:]
    approved, denied = out["extra_calls"]
    assert approved["ok"] is True, ctx
    assert json.loads(approved["text"]) == {"refund_id": f"rf-{order}", "order_id": order, "amount": 1}, ctx
    assert denied["ok"] is False, ctx
    assert denied["error"]["code"] == -32002, ctx
    assert denied["error"]["data"]["error"] == "approval_denied", ctx
    assert "sdk-denier" in denied["error"]["message"], ctx
    upstream = mcp_world.sse if route == "sse" else mcp_world.json
    amounts = [c["arguments"]["amount"] for c in upstream.calls() if c["arguments"].get("order_id") == order]
    assert amounts == [1], amounts


def test_approval_deny(mcp_world: McpWorld, pool):
    token, sid = open_mcp(mcp_world, "json")
    order = f"o-deny-{time.time_ns()}"
    held = HeldCall(pool, mcp_world, "json", token, sid, "create_refund", {"order_id": order, "amount": 5}, 12)
    a = wait_approval(mcp_world, lambda a: order in " ".join(a["reasons"]), "the approval to be listed")
    d = resolve(mcp_world, a["id"], "deny", by="bob")
    assert d.status_code == 200, d.text
    r, _ = held.result()
    err = assert_jsonrpc_refusal(r, 403, -32002, "approval_denied", 12)
    assert "bob" in err["message"], err
    assert f"refund of 5 for order {order} needs a human approver" in err["data"]["reasons"], err
    assert not [c for c in mcp_world.json.calls() if c["arguments"].get("order_id") == order]
    assert resolve(mcp_world, a["id"], "approve").status_code == 404


def test_approval_timeout(mcp_world: McpWorld, pool):
    token, sid = open_mcp(mcp_world, "json")
    order = f"o-timeout-{time.time_ns()}"
    held = HeldCall(pool, mcp_world, "json", token, sid, "create_refund", {"order_id": order, "amount": 1}, 13)
    a = wait_approval(mcp_world, lambda a: order in " ".join(a["reasons"]), "the approval to be listed")
    r, _ = held.result(timeout=10)
    elapsed = time.monotonic() - held.sent_at
    err = assert_jsonrpc_refusal(r, 403, -32003, "approval_timeout", 13)
    assert a["id"] in err["message"], err
    assert 1.8 <= elapsed < 6, f"answered after {elapsed:.2f}s with approvals.timeout 2s"
    assert all(x["id"] != a["id"] for x in approvals(mcp_world)), "a timed-out approval is still listed"
    assert resolve(mcp_world, a["id"], "approve").status_code == 404
    assert not [c for c in mcp_world.json.calls() if c["arguments"].get("order_id") == order]


def hold_then_disconnect(world: McpWorld, order: str) -> tuple[dict, float]:
    """Send a held tools/call over a raw TLS connection, wait until its approval is listed,
    then close the connection. Returns the approval and the time the request was sent."""
    token, sid = open_mcp(world, "json")
    body = json.dumps({"jsonrpc": "2.0", "id": 14, "method": "tools/call",
                       "params": {"name": "create_refund", "arguments": {"order_id": order, "amount": 3}}}).encode()
    head = (
        f"POST /json/mcp HTTP/1.1\r\nhost: 127.0.0.1:{world.sidecar.port}\r\n"
        "content-type: application/json\r\naccept: application/json, text/event-stream\r\n"
        f"chaperone-session: {token}\r\nmcp-session-id: {sid}\r\n"
        f"mcp-protocol-version: {PROTOCOL_VERSION}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    ctx = world.certs.agent_ssl()
    raw = socket.create_connection(("127.0.0.1", world.sidecar.port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        tls.sendall(head + body)
        sent = time.monotonic()
        a = wait_approval(world, lambda a: order in " ".join(a["reasons"]), "the approval to be listed")
    finally:
        try:
            tls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        tls.close()
    return a, sent


def test_approval_cancelled_when_agent_disconnects(mcp_world: McpWorld):
    order = f"o-disconnect-{time.time_ns()}"
    a, sent = hold_then_disconnect(mcp_world, order)
    closed = time.monotonic()
    wait_for(lambda: all(x["id"] != a["id"] for x in approvals(mcp_world)), 1.0,
             "the approval of a disconnected agent to disappear")
    gone = time.monotonic()
    assert gone - sent < 1.8, (
        f"the approval disappeared {gone - sent:.2f}s after the request, i.e. only by its 2s timeout, "
        f"not when the agent disconnected ({gone - closed:.2f}s after the close)")
    assert resolve(mcp_world, a["id"], "approve").status_code == 404
    time.sleep(0.1)
    assert not [c for c in mcp_world.json.calls() if c["arguments"].get("order_id") == order]


def test_cancelled_approval_is_audited(mcp_world: McpWorld):
    order = f"o-cancel-audit-{time.time_ns()}"
    a, _ = hold_then_disconnect(mcp_world, order)
    wait_for(lambda: all(x["id"] != a["id"] for x in approvals(mcp_world)), 1.0, "the approval to disappear")

    def resolved() -> bool:
        for line in mcp_world.sidecar.audit_path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:  # a line still being written
                continue
            if r.get("event") == "approval.resolved" and r.get("approval_id") == a["id"]:
                return True
        return False

    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and not resolved():
        time.sleep(0.05)
    assert resolved(), f"no approval.resolved record for the cancelled approval {a['id']}"


def test_approval_is_bound_to_the_exact_body(mcp_world: McpWorld, pool):
    token, sid = open_mcp(mcp_world, "json")
    order = f"o-bind-{time.time_ns()}"
    a_call = HeldCall(pool, mcp_world, "json", token, sid, "create_refund", {"order_id": order, "amount": 10}, 21)
    b_call = HeldCall(pool, mcp_world, "json", token, sid, "create_refund", {"order_id": order, "amount": 20}, 22)
    mine = lambda a: order in " ".join(a["reasons"])  # noqa: E731
    wait_for(lambda: len([a for a in approvals(mcp_world) if mine(a)]) == 2, 5, "two approvals")
    pending = {a["body_sha256"]: a for a in approvals(mcp_world) if mine(a)}
    assert set(pending) == {sha256(a_call.body), sha256(b_call.body)}, pending
    a_apr, b_apr = pending[sha256(a_call.body)], pending[sha256(b_call.body)]
    assert a_apr["id"] != b_apr["id"]
    assert a_apr["arguments_sha256"] != b_apr["arguments_sha256"], (a_apr, b_apr)

    assert resolve(mcp_world, a_apr["id"], "approve").status_code == 200
    r, m = a_call.result()
    assert r.status_code == 200 and m is not None, r.text
    assert json.loads(tool_text(m))["amount"] == 10, m
    # approving A did not release B
    assert not b_call.future.done()
    assert [x["id"] for x in approvals(mcp_world) if mine(x)] == [b_apr["id"]]
    assert resolve(mcp_world, b_apr["id"], "deny").status_code == 200
    r, _ = b_call.result()
    assert_jsonrpc_refusal(r, 403, -32002, "approval_denied", 22)
    amounts = [c["arguments"]["amount"] for c in mcp_world.json.calls() if c["arguments"].get("order_id") == order]
    assert amounts == [10], amounts


def test_approval_webhook(mcp_world: McpWorld, pool):
    token, sid = open_mcp(mcp_world, "json")
    order = f"o-hook-{time.time_ns()}"
    held = HeldCall(pool, mcp_world, "json", token, sid, "create_refund", {"order_id": order, "amount": 7}, 15)
    a = wait_approval(mcp_world, lambda a: order in " ".join(a["reasons"]), "the approval to be listed")
    hook = wait_for(lambda: next((b for b in mcp_world.webhook.bodies() if b.get("id") == a["id"]), None), 5,
                    "the webhook POST for the approval")
    assert isinstance(hook.get("text"), str) and a["id"] in hook["text"], hook
    assert "create_refund" in hook["text"], hook
    assert hook["event"] == "approval.requested", hook
    assert hook["tool"] == "create_refund" and hook["spiffe_id"] == AGENT_ID, hook
    assert hook["body_sha256"] == sha256(held.body), hook
    assert token not in json.dumps(hook), "the webhook payload leaked the session token"
    rec = [r for r in mcp_world.webhook.received if r["body"].get("id") == a["id"]]
    assert rec[0]["content_type"].startswith("application/json") and rec[0]["path"] == "/hook", rec
    assert resolve(mcp_world, a["id"], "deny").status_code == 200
    held.result()


def test_admin_cli_lists_and_approves(mcp_world: McpWorld, pool, chaperone_bin: Path):
    token, sid = open_mcp(mcp_world, "json")
    order = f"o-cli-{time.time_ns()}"
    held = HeldCall(pool, mcp_world, "json", token, sid, "create_refund", {"order_id": order, "amount": 8}, 16)
    a = wait_approval(mcp_world, lambda a: order in " ".join(a["reasons"]), "the approval to be listed")
    admin = ["--admin", mcp_world.sidecar.admin]
    ls = subprocess.run([str(chaperone_bin), "admin", "approvals", "list", *admin],
                        capture_output=True, text=True, timeout=20)
    assert ls.returncode == 0, ls.stderr
    line = next((x for x in ls.stdout.splitlines() if x.startswith(a["id"])), None)
    assert line is not None, ls.stdout
    assert AGENT_ID in line and "create_refund" in line and order in line, line

    ap = subprocess.run([str(chaperone_bin), "admin", "approvals", "approve", a["id"], "--by", "cli-tester", *admin],
                        capture_output=True, text=True, timeout=20)
    assert ap.returncode == 0, f"{ap.stdout}\n{ap.stderr}"
    r, m = held.result()
    assert r.status_code == 200 and m is not None and "result" in m, r.text
    assert json.loads(tool_text(m))["order_id"] == order

    again = subprocess.run([str(chaperone_bin), "admin", "approvals", "approve", a["id"], *admin],
                           capture_output=True, text=True, timeout=20)
    assert again.returncode != 0, f"approving a used approval succeeded: {again.stdout}"
    assert "not_found" in again.stdout, again.stdout
    empty = subprocess.run([str(chaperone_bin), "admin", "approvals", "list", *admin],
                           capture_output=True, text=True, timeout=20)
    assert a["id"] not in empty.stdout, empty.stdout


# --------------------------------------------------------------------------------------------
# Audit


def test_audit_chain_records_approvals(mcp_world: McpWorld, chaperone_bin: Path, tmp_path: Path, pool):
    """A dedicated sidecar (so it can be stopped): approve one held call, deny another,
    stop with SIGTERM, then `chaperone audit verify` accepts the file and rejects an edit."""
    sc = start_sidecar(chaperone_bin, mcp_world.certs, tmp_path, {"json": mcp_world.json.url},
                       name="chaperone-audit", approval_timeout="5s")
    world = McpWorld(mcp_world.certs, sc, mcp_world.sse, mcp_world.json, mcp_world.webhook, tmp_path)
    try:
        token, sid = open_mcp(world, "json")
        order = f"o-audit-{time.time_ns()}"
        ids = {}
        for rid, decision in ((31, "approve"), (32, "deny")):
            held = HeldCall(pool, world, "json", token, sid, "create_refund",
                            {"order_id": order, "amount": rid}, rid)
            a = wait_approval(world, lambda a, rid=rid: f"refund of {rid} for" in " ".join(a["reasons"]),
                              "the approval to be listed")
            assert resolve(world, a["id"], decision, by="auditor").status_code == 200
            r, _ = held.result()
            assert r.status_code == (200 if decision == "approve" else 403), r.text
            ids[decision] = a["id"]
    finally:
        rc = sc.stop()
    assert rc == 0, f"the sidecar exited with {rc} on SIGTERM:\n{sc.proc.logs()}"

    v = subprocess.run([str(chaperone_bin), "audit", "verify", str(sc.audit_path)],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, f"audit verify failed:\n{v.stdout}\n{v.stderr}"

    text = sc.audit_path.read_text()
    assert token not in text, "the audit log contains the session token"
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    events = [r["event"] for r in records]
    assert "session.created" in events and "request.decided" in events, events
    requested = {r["approval_id"] for r in records if r["event"] == "approval.requested"}
    assert set(ids.values()) <= requested, (ids, requested)
    resolved = {r["approval_id"]: r for r in records if r["event"] == "approval.resolved"}
    assert resolved[ids["approve"]]["decision"] == "approved", resolved
    assert resolved[ids["deny"]]["decision"] == "denied", resolved
    assert resolved[ids["approve"]].get("approver") == "auditor", resolved
    for r in records:
        assert r.get("hash") and "prev_hash" in r, r
    decided = [r for r in records if r["event"] == "request.decided" and r.get("mcp_tool") == "create_refund"]
    assert decided, events

    # The verifier is not a rubber stamp: an edited record breaks the chain.
    lines = text.splitlines()
    idx = next(i for i, r in enumerate(records) if r["event"] == "approval.resolved")
    tampered_rec = dict(records[idx], decision="approved" if records[idx]["decision"] != "approved" else "denied")
    lines[idx] = json.dumps(tampered_rec)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    t = subprocess.run([str(chaperone_bin), "audit", "verify", str(tampered)],
                       capture_output=True, text=True, timeout=30)
    assert t.returncode != 0, f"audit verify accepted an edited record:\n{t.stdout}"
