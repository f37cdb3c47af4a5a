# Behaviour: a session that keeps getting denied, or bursts far above normal call rates,
# is ended (`revoke_session`) and its calls are denied.
package chaperone.authz

session_stats := object.get(input.session, "stats", {}) if has_session

revoke_session contains sprintf("The session was denied %d times, more than the limit of %d.", [session_stats.denied, data.settings.behaviour.max_denied]) if {
	session_stats.denied > data.settings.behaviour.max_denied
}

revoke_session contains sprintf("The session made %d requests in the last minute, more than the limit of %d.", [session_stats.requests_last_minute, data.settings.behaviour.max_requests_per_minute]) if {
	session_stats.requests_last_minute > data.settings.behaviour.max_requests_per_minute
}

deny contains sprintf("The session is being ended: %s", [reason]) if {
	some reason in revoke_session
}
