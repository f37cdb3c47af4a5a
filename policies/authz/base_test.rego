package chaperone.authz_test


session := {"id": "s1", "task": "t", "intent": {"tools": ["echo", "public"]}, "scopes": ["orders:read"]}

test_default_deny_without_session if {
	not data.chaperone.authz.allow with input as {"session": null, "route": {"name": "echo", "labels": {}}}
	some reason in data.chaperone.authz.deny with input as {"session": null, "route": {"name": "echo", "labels": {}}}
	contains(reason, "requires a task session")
}

test_missing_session_key_denied if {
	count(data.chaperone.authz.deny) > 0 with input as {"route": {"name": "echo", "labels": {}}}
}

test_harmless_route_without_session_allowed if {
	data.chaperone.authz.allow with input as {"session": null, "route": {"name": "public", "labels": {"harmless": true}}}
	count(data.chaperone.authz.deny) == 0 with input as {"session": null, "route": {"name": "public", "labels": {"harmless": true}}}
}

test_session_with_scopes_allowed if {
	inp := {"session": session, "route": {"name": "echo", "labels": {}}, "request": {"method": "GET"}}
	data.chaperone.authz.allow with input as inp
	count(data.chaperone.authz.deny) == 0 with input as inp
	data.chaperone.authz.scopes == ["orders:read"] with input as inp
}

test_session_without_scopes_denied if {
	inp := {"session": object.union(session, {"scopes": []}), "route": {"name": "echo", "labels": {}}}
	not data.chaperone.authz.allow with input as inp
	"The session holds no scopes, so it may not make calls." in data.chaperone.authz.deny with input as inp
}
