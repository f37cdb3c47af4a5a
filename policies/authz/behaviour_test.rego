package chaperone.authz_test


stats_input(denied, rpm) := {
	"session": {"id": "s1", "task": "t", "scopes": ["x"], "intent": {"tools": ["echo"]}, "stats": {"requests": 10, "denied": denied, "requests_last_minute": rpm}},
	"route": {"name": "echo", "labels": {}},
	"request": {"method": "GET"},
}

test_normal_behaviour_not_revoked if {
	count(data.chaperone.authz.revoke_session) == 0 with input as stats_input(5, 120)
	count(data.chaperone.authz.deny) == 0 with input as stats_input(5, 120)
}

test_too_many_denials_revoke if {
	data.chaperone.authz.revoke_session == {"The session was denied 6 times, more than the limit of 5."} with input as stats_input(6, 1)
	"The session is being ended: The session was denied 6 times, more than the limit of 5." in data.chaperone.authz.deny with input as stats_input(6, 1)
}

test_burst_revokes if {
	data.chaperone.authz.revoke_session == {"The session made 500 requests in the last minute, more than the limit of 120."} with input as stats_input(0, 500)
}

test_thresholds_from_data if {
	count(data.chaperone.authz.revoke_session) == 1 with input as stats_input(2, 1) with data.settings.behaviour as {"max_denied": 1, "max_requests_per_minute": 100}
}
