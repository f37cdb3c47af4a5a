package chaperone.authz_test


support_identity := {"spiffe_id": "spiffe://prod.example.org/ns/support/sa/bot", "attributes": {"kind": "support"}}

code_identity := {"spiffe_id": "spiffe://prod.example.org/ns/dev/sa/coder", "attributes": {"kind": "code"}}

agent_session := {"id": "s1", "task": "t", "scopes": ["orders:read", "deploy"], "intent": {"tools": ["orders-api", "deploy", "tools-mcp", "get_order", "create_refund"]}}

call(identity, method, route) := {"identity": identity, "session": agent_session, "route": route, "request": {"method": method}}

orders := {"name": "orders-api", "labels": {"sensitivity": "low"}}

deploy_route := {"name": "deploy", "labels": {"action": "deploy"}}

test_support_get_allowed if {
	count(data.chaperone.authz.deny) == 0 with input as call(support_identity, "GET", orders)
}

test_support_post_denied if {
	"Support agents are read-only: the POST method is not allowed (only GET and HEAD)." in data.chaperone.authz.deny with input as call(support_identity, "POST", orders)
}

test_support_read_only_tool_allowed if {
	inp := object.union(call(support_identity, "POST", {"name": "tools-mcp", "labels": {}}), {"request": {"method": "POST", "mcp": {"method": "tools/call", "tool": "get_order"}}})
	count(data.chaperone.authz.deny) == 0 with input as inp
}

test_support_write_tool_denied if {
	inp := object.union(call(support_identity, "POST", {"name": "tools-mcp", "labels": {}}), {"request": {"method": "POST", "mcp": {"method": "tools/call", "tool": "create_refund"}}})
	"Support agents may only call read-only MCP tools; \"create_refund\" is not one of them." in data.chaperone.authz.deny with input as inp
}

test_code_agent_deploy_needs_approval if {
	inp := call(code_identity, "POST", deploy_route)
	count(data.chaperone.authz.deny) == 0 with input as inp
	data.chaperone.authz.approval == {"Deploying requires a human approval."} with input as inp
}

test_support_agent_deploy_denied if {
	"Only code agents may call deploy routes." in data.chaperone.authz.deny with input as call(support_identity, "POST", deploy_route)
}

test_unknown_kind_deploy_denied if {
	inp := call({"spiffe_id": "spiffe://x/y", "attributes": {}}, "POST", deploy_route)
	"Only code agents may call deploy routes." in data.chaperone.authz.deny with input as inp
}

test_code_agent_post_allowed if {
	count(data.chaperone.authz.deny) == 0 with input as call(code_identity, "POST", orders)
	count(data.chaperone.authz.approval) == 0 with input as call(code_identity, "POST", orders)
}
