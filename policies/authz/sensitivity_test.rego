package chaperone.authz_test


sens_session := {"id": "s1", "task": "t", "scopes": ["x"], "intent": {"tools": ["orders-api", "deploy"]}}

sens_input(sensitivity, t) := {
	"session": sens_session,
	"route": {"name": "orders-api", "labels": {"sensitivity": sensitivity}},
	"request": {"method": "GET"},
	"environment": {"time": t},
}

# 2026-12-01 is a Tuesday.
test_high_within_business_hours_no_approval if {
	count(data.chaperone.authz.approval) == 0 with input as sens_input("high", "2026-12-01T10:00:00Z")
}

test_high_at_night_needs_approval if {
	"Route \"orders-api\" is highly sensitive and this call is outside business hours, so it needs a human approval." in data.chaperone.authz.approval with input as sens_input("high", "2026-12-01T22:30:00Z")
}

test_high_on_weekend_needs_approval if {
	count(data.chaperone.authz.approval) == 1 with input as sens_input("high", "2026-12-05T10:00:00Z")
}

test_high_timezone_offset_respected if {
	# 10:00 at +05:00 is 05:00 UTC: outside business hours.
	count(data.chaperone.authz.approval) == 1 with input as sens_input("high", "2026-12-01T10:00:00+05:00")
}

test_high_without_time_needs_approval if {
	inp := object.remove(sens_input("high", ""), ["environment"])
	count(data.chaperone.authz.approval) == 1 with input as inp
}

test_critical_always_needs_approval if {
	"Route \"orders-api\" is critical: every call needs a human approval." in data.chaperone.authz.approval with input as sens_input("critical", "2026-12-01T10:00:00Z")
}

test_low_sensitivity_no_approval if {
	count(data.chaperone.authz.approval) == 0 with input as sens_input("low", "2026-12-01T22:00:00Z")
}
