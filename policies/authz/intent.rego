# Intent binding: a session may only reach the routes (HTTP) or MCP tools it declared in
# `intent.tools`. MCP protocol housekeeping without a tool (initialize, tools/list, ...)
# is not restricted here; `tools/list` responses are filtered by the sidecar.
package chaperone.authz

# The call is an MCP JSON-RPC message (protocol: mcp route).
is_mcp if is_object(input.request.mcp)

mcp_tool := input.request.mcp.tool if is_string(input.request.mcp.tool)

deny contains sprintf("The route %q is not among the tools this session declared in its intent.", [input.route.name]) if {
	has_session
	not harmless
	not is_mcp
	not input.route.name in input.session.intent.tools
}

deny contains sprintf("The MCP tool %q is not among the tools this session declared in its intent.", [mcp_tool]) if {
	mcp_tool
	has_session
	not mcp_tool in input.session.intent.tools
}
