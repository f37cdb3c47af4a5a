#!/usr/bin/env python3
"""Drive an MCP server with the official MCP Python SDK client and print what happened as JSON.

Usage: mcp_client_check.py URL [--ca F --cert F --key F] [--session-token T]
                               [--allowed-tool NAME --allowed-args JSON]
                               [--denied-tool NAME --denied-args JSON]
                               [--expect-tools a,b,c] [--expect-denied] [--slow N [--expect-progress]]
                               [--extra-call 'NAME={"arg": ...}']...

Certificates may also come from CHAPERONE_CA / CHAPERONE_CERT / CHAPERONE_KEY and the
session token from CHAPERONE_SESSION (sent as the `chaperone-session` header).

Steps: initialize, tools/list, one allowed tools/call, one tools/call that the sidecar
should deny, optionally slow_count(N) (a streamed SSE response with progress), then each
--extra-call in order (e.g. calls held for approval; the caller judges their results).
Prints one JSON object:

  {"ok": bool, "server": {...}, "protocol_version": "...", "tools": [...],
   "allowed_call": {"ok", "text" | "error"}, "denied_call": {"denied", "error": {code, message, data}},
   "slow_call": {...}, "extra_calls": [{"tool", "ok", "text" | "error"}, ...], "failures": [...]}

Exit status 0 iff every expectation holds (--expect-tools: the listed tool names exactly,
in any order; --expect-denied: the denied call came back as a JSON-RPC error with code
-32001 and a message starting "denied"; --expect-progress: slow_count delivered N progress
notifications, which needs an SSE response).
Works with SDK 1.x (httpx_client_factory) and 2.x (http_client=httpx2.AsyncClient).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from typing import Any

from mcp import ClientSession

try:  # SDK 2.x
    from mcp import MCPError as SdkError
except ImportError:  # SDK 1.x
    from mcp.shared.exceptions import McpError as SdkError  # type: ignore[no-redef]

try:  # SDK 2.x
    from mcp.client.streamable_http import streamable_http_client as _client_v2
except ImportError:
    _client_v2 = None
try:  # SDK 1.x
    from mcp.client.streamable_http import streamablehttp_client as _client_v1
except ImportError:
    _client_v1 = None


def ssl_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not (ca or cert):
        return None
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def open_transport(url: str, headers: dict[str, str], ctx: ssl.SSLContext | None):
    verify: Any = ctx if ctx is not None else True
    if _client_v2 is not None:
        try:
            import httpx2 as httpx_mod  # SDK 2.x transport
        except ImportError:
            import httpx as httpx_mod  # type: ignore[no-redef]
        client = httpx_mod.AsyncClient(
            headers=headers, verify=verify, timeout=httpx_mod.Timeout(30.0, read=300.0)
        )
        return client, _client_v2(url, http_client=client)
    import httpx

    def factory(headers=None, timeout=None, auth=None):  # noqa: ANN001 - SDK 1.x signature
        return httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=verify)

    return None, _client_v1(url, headers=headers, httpx_client_factory=factory)


def error_dict(exc: BaseException) -> dict[str, Any]:
    err = getattr(exc, "error", None)
    if err is not None:
        return {
            "type": type(exc).__name__,
            "code": getattr(err, "code", None),
            "message": getattr(err, "message", str(exc)),
            "data": getattr(err, "data", None),
        }
    return {"type": type(exc).__name__, "code": None, "message": str(exc), "data": None}


def result_text(result: Any) -> str:
    parts = []
    for item in getattr(result, "content", []) or []:
        text = getattr(item, "text", None)
        if text is not None:
            parts.append(text)
    return "\n".join(parts)


async def call(session: ClientSession, name: str, arguments: dict, progress=None) -> dict[str, Any]:
    try:
        if progress is not None:
            result = await session.call_tool(name, arguments, progress_callback=progress)
        else:
            result = await session.call_tool(name, arguments)
    except SdkError as exc:
        return {"ok": False, "error": error_dict(exc)}
    return {"ok": not getattr(result, "is_error", getattr(result, "isError", False)),
            "text": result_text(result)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {}
    if args.session_token:
        headers["chaperone-session"] = args.session_token
    ctx = ssl_context(args.ca, args.cert, args.key)
    out: dict[str, Any] = {"failures": []}
    http_client, transport = open_transport(args.url, headers, ctx)
    try:
        async with transport as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                info = getattr(init, "server_info", None) or getattr(init, "serverInfo", None)
                out["server"] = {"name": getattr(info, "name", None), "version": getattr(info, "version", None)}
                out["protocol_version"] = getattr(init, "protocol_version", None) or getattr(
                    init, "protocolVersion", None
                )

                listed = await session.list_tools()
                out["tools"] = sorted(t.name for t in listed.tools)
                out["next_cursor"] = getattr(listed, "next_cursor", None) or getattr(listed, "nextCursor", None)

                out["allowed_call"] = await call(session, args.allowed_tool, json.loads(args.allowed_args))
                out["denied_call"] = await call(session, args.denied_tool, json.loads(args.denied_args))
                denied = out["denied_call"]
                denied["denied"] = (
                    not denied["ok"]
                    and "error" in denied
                    and denied["error"]["code"] == -32001
                    and str(denied["error"]["message"]).startswith("denied")
                )

                if args.slow:
                    progress: list[float] = []

                    async def on_progress(p: float, total: float | None, message: str | None) -> None:
                        progress.append(p)

                    slow = await call(session, "slow_count", {"n": args.slow}, on_progress)
                    slow["progress_events"] = len(progress)
                    out["slow_call"] = slow

                out["extra_calls"] = []
                for name, arguments in args.extra_call:
                    result = await call(session, name, arguments)
                    result["tool"] = name
                    out["extra_calls"].append(result)
    finally:
        if http_client is not None:
            await http_client.aclose()

    if args.expect_tools is not None:
        want = sorted(t for t in args.expect_tools.split(",") if t)
        if out.get("tools") != want:
            out["failures"].append(f"tools {out.get('tools')} != expected {want}")
    if not out.get("allowed_call", {}).get("ok"):
        out["failures"].append("allowed call failed")
    if args.expect_denied and not out["denied_call"]["denied"]:
        out["failures"].append("denied call was not denied with -32001")
    if args.slow:
        slow = out.get("slow_call", {})
        if not slow.get("ok"):
            out["failures"].append("slow_count failed")
        elif args.expect_progress and slow.get("progress_events", 0) < args.slow:
            out["failures"].append("slow_count did not stream its progress")
    return out


def extra_call(spec: str) -> tuple[str, dict]:
    name, sep, arguments = spec.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {spec!r}")
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"arguments of {name} are not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"arguments of {name} must be a JSON object")
    return name, parsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--ca", default=os.environ.get("CHAPERONE_CA"))
    ap.add_argument("--cert", default=os.environ.get("CHAPERONE_CERT"))
    ap.add_argument("--key", default=os.environ.get("CHAPERONE_KEY"))
    ap.add_argument("--session-token", default=os.environ.get("CHAPERONE_SESSION"))
    ap.add_argument("--allowed-tool", default="search_docs")
    ap.add_argument("--allowed-args", default='{"query": "refunds"}')
    ap.add_argument("--denied-tool", default="delete_file")
    ap.add_argument("--denied-args", default='{"path": "/etc/secret"}')
    ap.add_argument("--expect-tools")
    ap.add_argument("--expect-denied", action="store_true")
    ap.add_argument("--slow", type=int, default=0)
    ap.add_argument("--expect-progress", action="store_true")
    ap.add_argument("--extra-call", action="append", default=[], type=extra_call, metavar="NAME=JSON")
    args = ap.parse_args()
    try:
        out = asyncio.run(run(args))
    except BaseException as exc:  # report, never a bare traceback
        if isinstance(exc, KeyboardInterrupt):
            raise
        cause = exc
        while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
        out = {"failures": [f"{type(cause).__name__}: {cause}"]}
    out["ok"] = not out["failures"]
    print(json.dumps(out, indent=2, default=str))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
