# Time window: when the intent declares `window: {not_before, not_after}` (RFC 3339), calls
# outside it are denied. Evaluated against input.environment.time.
package chaperone.authz

window := input.session.intent.window if has_session

call_time_ns := time.parse_rfc3339_ns(input.environment.time)

# One guard for the three checks below: a session without a window costs one rule
# definition per call, not three (see docs/policies.md, "Writing fast policies").
deny contains reason if {
	input.session.intent.window
	some reason in window_violations
}

window_violations contains sprintf("This call is before the session's declared time window, which opens at %s.", [window.not_before]) if {
	opens := time.parse_rfc3339_ns(window.not_before)
	call_time_ns < opens
}

window_violations contains sprintf("This call is after the session's declared time window, which closed at %s.", [window.not_after]) if {
	closes := time.parse_rfc3339_ns(window.not_after)
	call_time_ns > closes
}

window_violations contains "The session declares a time window, but the call carries no time to check it against." if {
	not input.environment.time
}
