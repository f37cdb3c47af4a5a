# Session creation for the MCP interop tests: any identity mapped to kind "mcp-agent"
# may open a session that declares a non-empty task, for at most 15 minutes.
package chaperone.session

import rego.v1

default allow := false

allow if {
	input.identity.attributes.kind == "mcp-agent"
	is_string(input.session.task)
	input.session.task != ""
}

max_ttl := "15m"

deny contains "only mcp-agent identities may open sessions" if {
	input.identity.attributes.kind != "mcp-agent"
}
