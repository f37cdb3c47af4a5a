# Test policy for tests/python/test_mcp_interop.py (MCP routes through the real sidecar).
#
# - Every call needs a session.
# - MCP methods other than tools/call (initialize, tools/list, notifications) are allowed.
# - A tool may be called only when the session declared it in `intent.tools`; everything
#   else (read_file in the tests) is denied with a reason, which also hides it in tools/list.
# - delete_file is argument-gated: only paths under /tmp/task-. When the sidecar filters
#   tools/list it asks about each tool with empty arguments, so a call without a `path`
#   is not denied here (the tool stays listed; the upstream rejects the missing argument).
# - create_refund needs a human approval.
package chaperone.authz

import rego.v1

default allow := false

mcp := input.request.mcp

has_session if is_object(input.session)

declared_tools := {t | some t in input.session.intent.tools}

allow if {
	has_session
	mcp.method != "tools/call"
}

allow if {
	has_session
	mcp.method == "tools/call"
	mcp.tool in declared_tools
}

deny contains "a session is required on MCP routes" if not has_session

deny contains sprintf("tool %s is not in the session's declared intent", [mcp.tool]) if {
	has_session
	mcp.method == "tools/call"
	not mcp.tool in declared_tools
}

deny contains sprintf("delete_file may only delete paths under /tmp/task-, not %q", [p]) if {
	mcp.tool == "delete_file"
	p := mcp.arguments.path
	not is_task_path(p)
}

is_task_path(p) if {
	is_string(p)
	startswith(p, "/tmp/task-")
}

approval contains sprintf("refund of %v for order %v needs a human approver", [mcp.arguments.amount, mcp.arguments.order_id]) if {
	mcp.tool == "create_refund"
	mcp.arguments.order_id
}

approval contains "refunds need a human approver" if {
	mcp.tool == "create_refund"
	not mcp.arguments.order_id
}
