//! `with input as` must re-evaluate dependent rules across modules of a package when the
//! rule is referenced by its full `data.` path. (With regorus 0.14.1, referencing it through
//! an `import data.pkg` alias instead returned undefined when another module of the package
//! was loaded first; the example tests therefore use full paths. See docs/policies.md.)
#![allow(clippy::unwrap_used)]
use regorus::Engine;

const FOO: &str = "package chaperone.authz\nfoo := 1\n";
const BASE: &str = "package chaperone.authz\ndefault allow := false\nallow if {\n count(session_scopes) > 0\n}\nsession_scopes := input.session.scopes\n";
const T: &str = "package chaperone.authz_test\ntest_a if { data.chaperone.authz.allow with input as {\"session\": {\"scopes\": [\"x\"]}} }\ntest_b if { not data.chaperone.authz.allow with input as {\"session\": {\"scopes\": []}} }\n";

#[test]
fn with_input_full_path_reevaluates_dependencies() {
    let mut e = Engine::new();
    for (n, s) in [("a.rego", FOO), ("b.rego", BASE), ("t_test.rego", T)] {
        e.add_policy(n.into(), s.into()).unwrap();
    }
    for t in ["test_a", "test_b"] {
        let v = e
            .eval_rule(format!("data.chaperone.authz_test.{t}"))
            .unwrap();
        assert_eq!(v, regorus::Value::from(true), "{t}");
    }
}
