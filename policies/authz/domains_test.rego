package chaperone.authz_test


domain_session(domains) := {"id": "s1", "task": "t", "scopes": ["x"], "intent": {"tools": ["hr-api", "orders-api"]}, "stats": {"data_domains": domains}}

hr_route := {"name": "hr-api", "labels": {"data_domain": "hr"}}

test_billing_session_denied_hr if {
	inp := {"session": domain_session(["billing"]), "route": hr_route, "request": {"method": "GET"}}
	"This session has already handled billing data, so it may not reach hr data on route \"hr-api\"." in data.chaperone.authz.deny with input as inp
}

test_fresh_session_reaches_hr if {
	inp := {"session": domain_session([]), "route": hr_route, "request": {"method": "GET"}}
	count(data.chaperone.authz.deny) == 0 with input as inp
}

test_billing_session_reaches_billing if {
	inp := {"session": domain_session(["billing"]), "route": {"name": "orders-api", "labels": {"data_domain": "billing"}}, "request": {"method": "GET"}}
	count(data.chaperone.authz.deny) == 0 with input as inp
}

test_rules_table_is_data_driven if {
	inp := {"session": domain_session(["billing"]), "route": hr_route, "request": {"method": "GET"}}
	count(data.chaperone.authz.deny) == 0 with input as inp with data.settings.cross_domain as []
}
