package chaperone.authz_test


window_input(t) := {
	"session": {"id": "s1", "task": "t", "scopes": ["x"], "intent": {"tools": ["echo"], "window": {"not_before": "2026-12-01T09:00:00Z", "not_after": "2026-12-01T11:00:00Z"}}},
	"route": {"name": "echo", "labels": {}},
	"request": {"method": "GET"},
	"environment": {"time": t},
}

test_inside_window_allowed if {
	count(data.chaperone.authz.deny) == 0 with input as window_input("2026-12-01T10:00:00Z")
	data.chaperone.authz.allow with input as window_input("2026-12-01T10:00:00Z")
}

test_before_window_denied if {
	"This call is before the session's declared time window, which opens at 2026-12-01T09:00:00Z." in data.chaperone.authz.deny with input as window_input("2026-12-01T08:59:59Z")
}

test_after_window_denied if {
	"This call is after the session's declared time window, which closed at 2026-12-01T11:00:00Z." in data.chaperone.authz.deny with input as window_input("2026-12-01T11:00:01Z")
}

test_window_without_time_denied if {
	inp := object.remove(window_input(""), ["environment"])
	count(data.chaperone.authz.deny) == 1 with input as inp
}

test_no_window_no_restriction if {
	inp := {"session": {"id": "s1", "task": "t", "scopes": ["x"], "intent": {"tools": ["echo"]}}, "route": {"name": "echo", "labels": {}}, "request": {"method": "GET"}, "environment": {"time": "2030-01-01T00:00:00Z"}}
	count(data.chaperone.authz.deny) == 0 with input as inp
}
