# Base rules: default deny; calls need a task session (except routes labelled
# `harmless: true`); the session must hold scopes. Other files in this package add
# `deny`, `approval` and `revoke_session` reasons; any deny reason overrides `allow`.
package chaperone.authz

default allow := false

# A route explicitly labelled harmless may be called without a session.
harmless if input.route.labels.harmless == true

has_session if is_object(input.session)

allow if harmless

allow if {
	has_session
	count(session_scopes) > 0
}

session_scopes := object.get(input.session, "scopes", []) if has_session

deny contains "This route requires a task session: declare one with POST /.chaperone/v1/sessions and send its token in the chaperone-session header." if {
	not has_session
	not harmless
}

deny contains "The session holds no scopes, so it may not make calls." if {
	has_session
	not harmless
	count(session_scopes) == 0
}

# Narrow the minted credential to what the session was granted.
scopes := session_scopes if {
	has_session
	count(session_scopes) > 0
}
