#!/usr/bin/env python3
"""A real MCP upstream for chaperone's MCP route tests, built on the official MCP Python SDK.

Serves MCP streamable HTTP at http://127.0.0.1:<port>/mcp with the tools

  search_docs(query)            read-only search over a few canned documents
  read_file(path)               returns canned file contents
  delete_file(path)             "deletes" a file (records it; nothing on disk is touched)
  create_refund(order_id, amount)
  slow_count(n)                 counts to n, sending a progress notification per step, so the response is a multi-event SSE stream

Usage: mcp_upstream_server.py PORT [--json-response] [--stateless]
                              [--tls-cert F --tls-key F [--client-ca F]]
                              [--emulate-deny TOOL]... [--deny-status 200|403]

--json-response makes the server answer POSTs with application/json instead of SSE.
--tls-* serve HTTPS (mTLS when --client-ca is given) so a client's mTLS setup can be tested
without the sidecar. --emulate-deny answers tools/call for TOOL with the JSON-RPC error the
sidecar sends for a policy denial (crates/mcp `jsonrpc_denied`), to check that the SDK client
surfaces it. Every tools/call that reaches a tool is printed to stdout as a JSON line.
Works with SDK 1.x (FastMCP) and 2.x (MCPServer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

try:  # SDK 2.x
    from mcp.server.mcpserver import Context, MCPServer as Server
except ImportError:  # SDK 1.x
    from mcp.server.fastmcp import Context, FastMCP as Server  # type: ignore[no-redef]

try:
    from mcp.server.transport_security import TransportSecuritySettings
except ImportError:  # very old SDKs
    TransportSecuritySettings = None  # type: ignore[assignment,misc]

import uvicorn

DOCS = {
    "refunds": "Refunds over 100 EUR need a second approver.",
    "shipping": "Orders ship within 2 business days.",
    "returns": "Returns are accepted within 30 days.",
}
FILES = {"/docs/readme.txt": "hello from the upstream", "/etc/secret": "top secret"}
DELETED: list[str] = []


def log_call(tool: str, **arguments: object) -> None:
    print(json.dumps({"event": "tools/call", "tool": tool, "arguments": arguments}), flush=True)


def build_server() -> Server:
    mcp = Server("chaperone-test-upstream")

    @mcp.tool()
    def search_docs(query: str) -> str:
        """Search the documentation for a query."""
        log_call("search_docs", query=query)
        hits = [f"{k}: {v}" for k, v in DOCS.items() if query.lower() in (k + " " + v).lower()]
        return "\n".join(hits) or "no results"

    @mcp.tool()
    def read_file(path: str) -> str:
        """Read a file."""
        log_call("read_file", path=path)
        return FILES.get(path, f"no such file: {path}")

    @mcp.tool()
    def delete_file(path: str) -> str:
        """Delete a file."""
        log_call("delete_file", path=path)
        DELETED.append(path)
        return f"deleted {path}"

    @mcp.tool()
    def create_refund(order_id: str, amount: float) -> str:
        """Create a refund for an order."""
        log_call("create_refund", order_id=order_id, amount=amount)
        return json.dumps({"refund_id": f"rf-{order_id}", "order_id": order_id, "amount": amount})

    @mcp.tool()
    async def slow_count(n: int, ctx: Context) -> str:
        """Count to n slowly, reporting progress."""
        log_call("slow_count", n=n)
        n = max(0, min(n, 100))
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"counted {i}")
            await asyncio.sleep(0.02)
        return f"counted to {n}"

    return mcp


def denial_body(request_id: object, tool: str) -> bytes:
    """The sidecar's JSON-RPC denial (same shape as chaperone_mcp::jsonrpc_denied)."""
    reason = f"tool {tool} is not allowed in this session"
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": -32001,
                "message": f"denied: {reason}",
                "data": {"error": "denied", "reasons": [reason], "request_id": "emulated"},
            },
        },
        separators=(",", ":"),
    ).encode()


class EmulateDeny:
    """ASGI middleware answering tools/call for selected tools with a denial."""

    def __init__(self, app, tools: set[str], status: int) -> None:
        self.app = app
        self.tools = tools
        self.status = status

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not self.tools:
            return await self.app(scope, receive, send)
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        if (
            isinstance(msg, dict)
            and msg.get("method") == "tools/call"
            and isinstance(msg.get("params"), dict)
            and msg["params"].get("name") in self.tools
        ):
            payload = denial_body(msg.get("id"), msg["params"]["name"])
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return None

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", type=int)
    ap.add_argument("--json-response", action="store_true")
    ap.add_argument("--stateless", action="store_true")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca")
    ap.add_argument("--emulate-deny", action="append", default=[])
    ap.add_argument("--deny-status", type=int, default=200)
    args = ap.parse_args()

    mcp = build_server()
    kwargs = {"json_response": args.json_response, "stateless_http": args.stateless}
    if TransportSecuritySettings is not None:
        # The sidecar forwards with its own Host header; loopback-only, so no rebinding risk.
        kwargs["transport_security"] = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    try:
        app = mcp.streamable_http_app(**kwargs)
    except TypeError:  # SDK 1.x: options are settings, not arguments
        mcp.settings.json_response = args.json_response
        mcp.settings.stateless_http = args.stateless
        if TransportSecuritySettings is not None:
            mcp.settings.transport_security = kwargs["transport_security"]
        app = mcp.streamable_http_app()
    if args.emulate_deny:
        app = EmulateDeny(app, set(args.emulate_deny), args.deny_status)

    config = {"host": "127.0.0.1", "port": args.port, "log_level": "warning", "lifespan": "on"}
    if args.tls_cert:
        config.update(ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
        if args.client_ca:
            config.update(ssl_ca_certs=args.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    print(json.dumps({"event": "listening", "port": args.port, "tls": bool(args.tls_cert)}), flush=True)
    uvicorn.run(app, **config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
