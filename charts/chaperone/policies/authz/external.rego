# External destinations (`labels.external: true`) are reachable only by identities with
# attribute `external: true` whose session intent also declares `external: true`.
package chaperone.authz

deny contains sprintf("The route %q leaves the organisation, and this identity is not allowed to reach external destinations.", [input.route.name]) if {
	input.route.labels.external == true
	not input.identity.attributes.external == true
}

deny contains sprintf("The route %q leaves the organisation, but this session's intent does not declare external: true.", [input.route.name]) if {
	input.route.labels.external == true
	not input.session.intent.external == true
}
