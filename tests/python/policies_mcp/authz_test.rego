package chaperone.authz_test

import rego.v1

sess := {"id": "s1", "task": "t", "intent": {"tools": ["search_docs", "delete_file", "create_refund"]}, "scopes": []}

call(tool, args) := {"session": sess, "request": {"mcp": {"method": "tools/call", "tool": tool, "arguments": args}}}

test_declared_tool_allowed if {
	data.chaperone.authz.allow with input as call("search_docs", {"query": "x"})
	count(data.chaperone.authz.deny) == 0 with input as call("search_docs", {"query": "x"})
}

test_undeclared_tool_denied if {
	not data.chaperone.authz.allow with input as call("read_file", {"path": "/etc/secret"})
	count(data.chaperone.authz.deny) == 1 with input as call("read_file", {"path": "/etc/secret"})
}

test_delete_outside_task_dir_denied if {
	count(data.chaperone.authz.deny) == 1 with input as call("delete_file", {"path": "/etc/secret"})
}

test_delete_in_task_dir_allowed if {
	count(data.chaperone.authz.deny) == 0 with input as call("delete_file", {"path": "/tmp/task-1/a"})
}

test_delete_listed_with_empty_arguments if {
	count(data.chaperone.authz.deny) == 0 with input as call("delete_file", {})
}

test_refund_needs_approval if {
	count(data.chaperone.authz.approval) == 1 with input as call("create_refund", {"order_id": "o1", "amount": 5})
}

test_no_session_denied if {
	not data.chaperone.authz.allow with input as {"session": null, "request": {"mcp": {"method": "tools/list", "tool": null, "arguments": {}}}}
}
