# Sensitivity: `critical` routes always need a human approval; `high` routes need one
# outside business hours (data.settings.business_hours, UTC). The clock is
# `input.environment.time` (never time.now_ns), so decisions are reproducible; a missing
# or unparsable time counts as outside business hours.
package chaperone.authz

approval contains sprintf("Route %q is critical: every call needs a human approval.", [input.route.name]) if {
	input.route.labels.sensitivity == "critical"
}

approval contains sprintf("Route %q is highly sensitive and this call is outside business hours, so it needs a human approval.", [input.route.name]) if {
	input.route.labels.sensitivity == "high"
	not within_business_hours
}

within_business_hours if {
	ns := time.parse_rfc3339_ns(input.environment.time)
	[hour, _, _] := time.clock(ns)
	hours := data.settings.business_hours
	hour >= hours.start_hour
	hour < hours.end_hour
	time.weekday(ns) in hours.days
}
