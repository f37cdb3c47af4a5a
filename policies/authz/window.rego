# Time window: when the intent declares `window: {not_before, not_after}` (RFC 3339), calls
# outside it are denied. Evaluated against input.environment.time.
package chaperone.authz

window := input.session.intent.window if has_session

call_time_ns := time.parse_rfc3339_ns(input.environment.time)

deny contains sprintf("This call is before the session's declared time window, which opens at %s.", [window.not_before]) if {
	call_time_ns < time.parse_rfc3339_ns(window.not_before)
}

deny contains sprintf("This call is after the session's declared time window, which closed at %s.", [window.not_after]) if {
	call_time_ns > time.parse_rfc3339_ns(window.not_after)
}

deny contains "The session declares a time window, but the call carries no time to check it against." if {
	window
	not input.environment.time
}
