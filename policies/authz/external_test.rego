package chaperone.authz_test


partner := {"name": "partner", "labels": {"external": true}}

ext_session(external) := {"id": "s1", "task": "t", "scopes": ["x"], "intent": {"tools": ["partner"], "external": external}}

ext_identity(external) := {"spiffe_id": "spiffe://prod.example.org/ns/a/sa/b", "attributes": {"kind": "code", "external": external}}

test_external_allowed_when_both_declare if {
	inp := {"identity": ext_identity(true), "session": ext_session(true), "route": partner, "request": {"method": "GET"}}
	count(data.chaperone.authz.deny) == 0 with input as inp
	data.chaperone.authz.allow with input as inp
}

test_external_denied_for_internal_identity if {
	inp := {"identity": ext_identity(false), "session": ext_session(true), "route": partner, "request": {"method": "GET"}}
	"The route \"partner\" leaves the organisation, and this identity is not allowed to reach external destinations." in data.chaperone.authz.deny with input as inp
}

test_external_denied_without_intent if {
	inp := {"identity": ext_identity(true), "session": ext_session(false), "route": partner, "request": {"method": "GET"}}
	"The route \"partner\" leaves the organisation, but this session's intent does not declare external: true." in data.chaperone.authz.deny with input as inp
}

test_internal_route_unaffected if {
	inp := {"identity": ext_identity(false), "session": object.union(ext_session(false), {"intent": {"tools": ["echo"]}}), "route": {"name": "echo", "labels": {"external": false}}, "request": {"method": "GET"}}
	count(data.chaperone.authz.deny) == 0 with input as inp
}
