package chaperone.authz_test


intent_session := {"id": "s1", "task": "look up order", "scopes": ["orders:read"], "intent": {"tools": ["orders-api", "get_order"]}}

test_declared_route_allowed if {
	inp := {"session": intent_session, "route": {"name": "orders-api", "labels": {}}, "request": {"method": "GET"}}
	count(data.chaperone.authz.deny) == 0 with input as inp
	data.chaperone.authz.allow with input as inp
}

test_undeclared_route_denied if {
	inp := {"session": intent_session, "route": {"name": "echo", "labels": {}}, "request": {"method": "GET"}}
	"The route \"echo\" is not among the tools this session declared in its intent." in data.chaperone.authz.deny with input as inp
}

test_no_declared_tools_denied if {
	s := object.remove(intent_session, ["intent"])
	inp := {"session": s, "route": {"name": "orders-api", "labels": {}}, "request": {"method": "GET"}}
	"The route \"orders-api\" is not among the tools this session declared in its intent." in data.chaperone.authz.deny with input as inp
}

test_declared_mcp_tool_allowed if {
	inp := {"session": intent_session, "route": {"name": "tools-mcp", "labels": {}}, "request": {"method": "POST", "mcp": {"method": "tools/call", "tool": "get_order", "arguments": {}}}}
	count(data.chaperone.authz.deny) == 0 with input as inp
}

test_undeclared_mcp_tool_denied if {
	inp := {"session": intent_session, "route": {"name": "tools-mcp", "labels": {}}, "request": {"method": "POST", "mcp": {"method": "tools/call", "tool": "delete_order", "arguments": {}}}}
	"The MCP tool \"delete_order\" is not among the tools this session declared in its intent." in data.chaperone.authz.deny with input as inp
}

test_mcp_housekeeping_not_bound if {
	inp := {"session": intent_session, "route": {"name": "tools-mcp", "labels": {}}, "request": {"method": "POST", "mcp": {"method": "tools/list"}}}
	count(data.chaperone.authz.deny) == 0 with input as inp
}
