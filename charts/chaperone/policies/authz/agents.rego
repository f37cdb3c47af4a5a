# Agent kinds (identity attribute `kind`):
# - `support` agents are read-only: only GET/HEAD over HTTP, and only the read-only MCP
#   tools listed in data.settings.read_only_tools;
# - routes labelled `action: deploy` may be called only by `code` agents, and only after
#   a human approves the call.
package chaperone.authz

deny contains sprintf("Support agents are read-only: the %s method is not allowed (only %s).", [input.request.method, concat(" and ", data.settings.read_only_methods)]) if {
	input.identity.attributes.kind == "support"
	not is_mcp
	not input.request.method in data.settings.read_only_methods
}

deny contains sprintf("Support agents may only call read-only MCP tools; %q is not one of them.", [mcp_tool]) if {
	mcp_tool
	input.identity.attributes.kind == "support"
	not mcp_tool in data.settings.read_only_tools
}

# Also when the identity has no kind at all.
deny contains "Only code agents may call deploy routes." if {
	input.route.labels.action == "deploy"
	not input.identity.attributes.kind == "code"
}

approval contains "Deploying requires a human approval." if {
	input.route.labels.action == "deploy"
	input.identity.attributes.kind == "code"
}
