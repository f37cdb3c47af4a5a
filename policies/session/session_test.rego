package chaperone.session_test


support := {"spiffe_id": "spiffe://prod.example.org/ns/support/sa/bot", "attributes": {"kind": "support"}}

code := {"spiffe_id": "spiffe://prod.example.org/ns/dev/sa/coder", "attributes": {"kind": "code"}}

proposed(scopes, parent, chain) := {"task": "refund order 123", "intent": {"tools": ["orders-api"]}, "scopes": scopes, "ttl": "10m", "parent": parent, "delegation_chain": chain}

test_support_session_allowed if {
	inp := {"identity": support, "session": proposed(["orders:read"], null, ["spiffe://prod.example.org/ns/support/sa/bot"])}
	data.chaperone.session.allow with input as inp
	count(data.chaperone.session.deny) == 0 with input as inp
	data.chaperone.session.max_ttl == "15m" with input as inp
	data.chaperone.session.scopes == ["orders:read", "kb:read", "customers:read"] with input as inp
}

test_code_session_ttl if {
	data.chaperone.session.max_ttl == "1h" with input as {"identity": code, "session": proposed([], null, [])}
}

test_unknown_kind_denied if {
	inp := {"identity": {"spiffe_id": "spiffe://x/y", "attributes": {"kind": "robot"}}, "session": proposed([], null, [])}
	not data.chaperone.session.allow with input as inp
	"This identity has no agent kind that may open sessions." in data.chaperone.session.deny with input as inp
}

test_missing_task_denied if {
	inp := {"identity": support, "session": object.remove(proposed([], null, []), ["task"])}
	"A session must declare its task." in data.chaperone.session.deny with input as inp
}

test_delegation_within_parent_allowed if {
	parent := {"id": "p", "scopes": ["orders:read", "kb:read"]}
	inp := {"identity": support, "session": proposed(["kb:read"], parent, ["spiffe://a", "spiffe://b"])}
	count(data.chaperone.session.deny) == 0 with input as inp
}

test_delegation_scope_escalation_denied if {
	parent := {"id": "p", "scopes": ["kb:read"]}
	inp := {"identity": support, "session": proposed(["kb:read", "orders:read"], parent, ["spiffe://a", "spiffe://b"])}
	data.chaperone.session.deny == {"A delegated session cannot request scope \"orders:read\", which its parent session does not hold."} with input as inp
}

test_delegation_too_deep_denied if {
	parent := {"id": "p", "scopes": ["kb:read"]}
	inp := {"identity": support, "session": proposed(["kb:read"], parent, ["spiffe://a", "spiffe://b", "spiffe://c", "spiffe://d"])}
	"The delegation chain is 4 deep, more than the limit of 3." in data.chaperone.session.deny with input as inp
}
