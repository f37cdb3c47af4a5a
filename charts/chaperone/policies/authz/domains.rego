# Cross-data-domain flow: a session that has already touched data of domain `from` may
# not reach a route whose `data_domain` label is `to` (table: data.settings.cross_domain).
package chaperone.authz

deny contains sprintf("This session has already handled %s data, so it may not reach %s data on route %q.", [rule.from, rule.to, input.route.name]) if {
	has_session
	domain := input.route.labels.data_domain
	some rule in data.settings.cross_domain
	rule.to == domain
	rule.from in input.session.stats.data_domains
}
