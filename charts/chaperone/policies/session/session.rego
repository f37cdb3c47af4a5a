# Session creation, delegation and the drift re-check. Per identity `kind` (table:
# data.settings.session_kinds): whether sessions are allowed, their maximum TTL and the
# scopes that may be granted (the sidecar grants requested ∩ scopes). Delegated sessions
# may not request scopes their parent lacks, nor exceed the maximum delegation depth.
package chaperone.session

default allow := false

kind := input.identity.attributes.kind

kind_settings := data.settings.session_kinds[kind]

allow if kind_settings

max_ttl := kind_settings.max_ttl

scopes := kind_settings.scopes

deny contains "This identity has no agent kind that may open sessions." if {
	not kind_settings
}

# Written as a positive helper: OPA and regorus disagree on `not is_string(undefined)`
# (see docs/policies.md), but agree on `not has_task`.
has_task if {
	is_string(input.session.task)
	input.session.task != ""
}

deny contains "A session must declare its task." if not has_task

parent := input.session.parent if is_object(input.session.parent)

deny contains sprintf("A delegated session cannot request scope %q, which its parent session does not hold.", [s]) if {
	parent
	some s in input.session.scopes
	not s in parent.scopes
}

deny contains sprintf("The delegation chain is %d deep, more than the limit of %d.", [count(input.session.delegation_chain), data.settings.delegation.max_depth]) if {
	count(input.session.delegation_chain) > data.settings.delegation.max_depth
}
