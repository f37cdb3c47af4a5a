# Behaviour: a session that keeps getting denied, or bursts far above normal call rates,
# is ended (`revoke_session`) and its calls are denied.
package chaperone.authz

revoke_session contains sprintf("The session was denied %d times, more than the limit of %d.", [input.session.stats.denied, data.settings.behaviour.max_denied]) if {
	input.session.stats.denied > data.settings.behaviour.max_denied
}

revoke_session contains sprintf("The session made %d requests in the last minute, more than the limit of %d.", [input.session.stats.requests_last_minute, data.settings.behaviour.max_requests_per_minute]) if {
	input.session.stats.requests_last_minute > data.settings.behaviour.max_requests_per_minute
}

deny contains sprintf("The session is being ended: %s", [reason]) if {
	some reason in revoke_session
}
