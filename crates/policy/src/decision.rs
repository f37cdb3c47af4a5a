//! The internal decision module: one rule per entry point that gathers the rules chaperone
//! reads (`allow`, `deny`, ...) into one value, so that one evaluation computes every
//! shared helper rule once. The value is an array in the order of the entry's fields
//! ([`ENTRIES`], read back with [`member`]): regorus builds an object literal through a
//! B-tree and reads it back by key comparisons, an array is one allocation read by index
//! (≈ 4 k instructions per decision less, 3 % of the example library's).
//!
//! A rule the policies leave undefined must read as `null`, not make the whole value
//! undefined, so in general each field goes through a wrapper with a `default`:
//!
//! ```rego
//! default authz_deny := null
//! authz_deny := data.chaperone.authz.deny
//! ```
//!
//! Each such wrapper is one more rule call (with its register window and cache entry) per
//! evaluation, ≈ 2,000 VM instructions. Most fields cannot be undefined: a multi-value
//! rule (`deny contains ...`) is an empty set when no definition holds, and a rule with a
//! `default` always has a value. For those the module reads the rule directly; the
//! wrapper stays for everything else (complete rules without a default, functions, rule
//! trees such as `deny.x`, rules of an enclosing package that could define the field).
//! A field that no policy defines at all (the example library sets no `credential`) can
//! only get a value from data: when the data has none either, the module writes `null`
//! in its place, which is what the wrapper would compute, without the rule call; when
//! the data has one, the module reads it directly (a data value is always defined).
//! The result is the same value either way; only the number of rule calls changes.
//! Were a field ever misjudged as always defined, the decision value would be undefined,
//! and `decision_from_value` reads that as `allow = false`: the call is refused, never permitted.

use std::fmt::Write as _;

use regorus::unstable::{Expr, Module, Rule, RuleHead};
use regorus::Value;

/// Path of the generated module in error messages.
pub(crate) const DECISION_MODULE_PATH: &str = "<chaperone-internal>/decision.rego";

/// `(entry name, package, fields)` of each entry point, in the order of the module; the
/// fields in the order of the entry's array.
const ENTRIES: [(&str, &str, &[&str]); 2] = [
    (
        "authz",
        "chaperone.authz",
        &[
            "allow",
            "deny",
            "approval",
            "credential",
            "scopes",
            "revoke_session",
        ],
    ),
    (
        "session",
        "chaperone.session",
        &["allow", "deny", "max_ttl", "scopes"],
    ),
];

/// How the policies define one field's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Always has a value (a multi-value rule, or a rule with a `default`): read directly.
    AlwaysDefined,
    /// Anything else: read through a `default := null` wrapper.
    MayBeUndefined,
    /// No policy module defines anything at or under it: only data can give it a value.
    NotInPolicies,
}

/// The decision module's text for the given (already parsed) policy modules and the
/// policy set's data document.
pub(crate) fn module_text<'a, I>(modules: I, data: &Value) -> String
where
    I: IntoIterator<Item = &'a Module> + Clone,
{
    let mut out = String::from("package __chaperone__\n");
    for (object, package, fields) in ENTRIES {
        let mut members = String::new();
        for field in fields {
            let path = format!("data.{package}.{field}");
            let expr = match shape(modules.clone(), package, field) {
                Shape::NotInPolicies if !in_data(data, package, field) => "null".to_owned(),
                // A data value is always defined.
                Shape::AlwaysDefined | Shape::NotInPolicies => path,
                Shape::MayBeUndefined => {
                    let wrapper = format!("{object}_{field}");
                    let _ = write!(out, "\ndefault {wrapper} := null\n{wrapper} := {path}\n");
                    wrapper
                }
            };
            let _ = writeln!(members, "\t{expr}, # {field}");
        }
        let _ = write!(out, "\n{object} := [\n{members}]\n");
    }
    out
}

/// `field` of the decision value `decision` of entry `entry` (`"authz"`, `"session"`):
/// undefined when the value is not the module's array (an evaluation error upstream).
pub(crate) fn member<'a>(decision: &'a Value, entry: &str, field: &str) -> &'a Value {
    let index = ENTRIES
        .iter()
        .find(|(name, _, _)| *name == entry)
        .and_then(|(_, _, fields)| fields.iter().position(|f| *f == field));
    match (decision, index) {
        (Value::Array(items), Some(i)) => items.get(i).unwrap_or(&Value::Undefined),
        _ => &Value::Undefined,
    }
}

/// Whether the data document has a value at `<package>.<field>`.
fn in_data(data: &Value, package: &str, field: &str) -> bool {
    let mut at = data;
    for name in package.split('.').chain([field]) {
        match at.as_object().ok().and_then(|o| o.get(&Value::from(name))) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// What one rule definition is, as far as `shape` cares.
enum Head {
    /// `default p := v`.
    Default,
    /// `p contains x if ...`.
    MultiValue,
    /// `p := v if ...` / `p if ...`.
    Complete,
    /// Anything that makes the field's value uncertain: a function (or a default for
    /// one), a set head without a key.
    Other,
}

/// How `data.<package>.<field>` is defined by `modules`.
pub(crate) fn shape<'a, I>(modules: I, package: &str, field: &str) -> Shape
where
    I: IntoIterator<Item = &'a Module>,
{
    let nested = format!("{package}.{field}");
    let mut has_default = false;
    let mut sets = 0usize;
    let mut others = 0usize;
    // Rules in an enclosing package (`package chaperone` with `authz.credential := ...`)
    // may define the field under a longer head: then it is not known to be absent.
    let mut enclosing_rules = false;
    for m in modules {
        let Some(pkg) = ref_path(&m.package.refr) else {
            return Shape::MayBeUndefined;
        };
        if package.starts_with(&format!("{pkg}.")) && !m.policy.is_empty() {
            enclosing_rules = true;
        }
        // A package at or under the field (`package chaperone.authz.deny`) merges its
        // rules into the value: not a plain rule.
        if pkg == nested || pkg.starts_with(&format!("{nested}.")) {
            return Shape::MayBeUndefined;
        }
        if pkg != package {
            continue;
        }
        for rule in &m.policy {
            let (refr, kind) = match &**rule {
                Rule::Default { refr, args, .. } if args.is_empty() => (refr, Head::Default),
                Rule::Default { refr, .. } => (refr, Head::Other),
                Rule::Spec { head, .. } => match head {
                    RuleHead::Set { refr, key, .. } if key.is_some() => (refr, Head::MultiValue),
                    RuleHead::Set { refr, .. } | RuleHead::Func { refr, .. } => (refr, Head::Other),
                    RuleHead::Compr { refr, .. } => (refr, Head::Complete),
                },
            };
            let Some(head) = ref_path(refr) else {
                // A computed head (`p[x] := ...`) rooted anywhere: be conservative when
                // it could be this field.
                if root_var(refr).is_none_or(|r| r == field) {
                    return Shape::MayBeUndefined;
                }
                continue;
            };
            if head == field {
                match kind {
                    Head::Default => has_default = true,
                    Head::MultiValue => sets += 1,
                    Head::Complete => others += 1,
                    Head::Other => return Shape::MayBeUndefined,
                }
            } else if head.starts_with(&format!("{field}.")) {
                // `deny.extra contains ...`: a rule tree, not one rule.
                return Shape::MayBeUndefined;
            }
        }
    }
    match (has_default, sets, others) {
        (false, 0, 0) if !enclosing_rules => Shape::NotInPolicies,
        (false, s, 0) if s > 0 => Shape::AlwaysDefined,
        (true, 0, _) => Shape::AlwaysDefined,
        _ => Shape::MayBeUndefined,
    }
}

/// `a.b.c` for a reference built only of names and dots.
fn ref_path(e: &Expr) -> Option<String> {
    match e {
        Expr::Var { value, .. } => value.as_string().ok().map(|s| s.to_string()),
        Expr::RefDot { refr, field, .. } => {
            let base = ref_path(refr)?;
            let f = field.1.as_string().ok()?;
            Some(format!("{base}.{f}"))
        }
        Expr::RefBrack { refr, index, .. } => match &**index {
            Expr::String { value, .. } => {
                let base = ref_path(refr)?;
                let f = value.as_string().ok()?;
                Some(format!("{base}.{f}"))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The first name of a reference (`p` of `p[x].y`).
fn root_var(e: &Expr) -> Option<String> {
    match e {
        Expr::Var {
            value: Value::String(s),
            ..
        } => Some(s.to_string()),
        Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => root_var(refr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::Engine;

    fn shapes(src: &str) -> Vec<(String, Shape)> {
        let mut e = Engine::new();
        e.add_policy("p.rego".into(), src.into())
            .unwrap_or_else(|err| panic!("{err}"));
        let mods: Vec<&Module> = e.get_modules().iter().map(|m| &**m).collect();
        ["allow", "deny", "approval", "credential", "scopes"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    shape(mods.iter().copied(), "chaperone.authz", f),
                )
            })
            .collect()
    }

    fn of(v: &[(String, Shape)], f: &str) -> Shape {
        v.iter()
            .find(|(n, _)| n == f)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("{f}"))
    }

    #[test]
    fn multi_value_and_defaulted_rules_are_read_directly() {
        let s = shapes(
            "package chaperone.authz\n\
             default allow := false\n\
             allow if input.x\n\
             deny contains \"a\" if input.y\n\
             deny contains \"b\" if input.z\n\
             scopes := [\"s\"] if input.x\n",
        );
        assert_eq!(of(&s, "allow"), Shape::AlwaysDefined);
        assert_eq!(of(&s, "deny"), Shape::AlwaysDefined);
        // A complete rule without a default can be undefined; a name the policies do not
        // define may still come from data.
        assert_eq!(of(&s, "scopes"), Shape::MayBeUndefined);
        assert_eq!(of(&s, "approval"), Shape::NotInPolicies);
        assert_eq!(of(&s, "credential"), Shape::NotInPolicies);
    }

    #[test]
    fn rule_trees_functions_and_nested_packages_keep_the_wrapper() {
        let s = shapes(
            "package chaperone.authz\n\
             deny contains \"a\" if input.y\n\
             deny.extra contains \"b\" if input.z\n\
             allow(x) := true if x\n\
             approval[k] := 1 if some k in input.ks\n",
        );
        assert_eq!(of(&s, "deny"), Shape::MayBeUndefined);
        assert_eq!(of(&s, "allow"), Shape::MayBeUndefined);
        assert_eq!(of(&s, "approval"), Shape::MayBeUndefined);

        assert_eq!(
            deny_shape_of_files(&[
                "package chaperone.authz\ndeny contains \"a\" if input.y\n",
                "package chaperone.authz.deny\nx := 1\n",
            ]),
            Shape::MayBeUndefined
        );
    }

    /// `deny`'s shape when each source is its own policy file.
    fn deny_shape_of_files(sources: &[&str]) -> Shape {
        let mut e = Engine::new();
        for (i, src) in sources.iter().enumerate() {
            e.add_policy(format!("p{i}.rego"), (*src).into())
                .unwrap_or_else(|err| panic!("{err}"));
        }
        let mods: Vec<&Module> = e.get_modules().iter().map(|m| &**m).collect();
        shape(mods.iter().copied(), "chaperone.authz", "deny")
    }

    #[test]
    fn a_rule_in_an_enclosing_package_may_define_the_field() {
        assert_eq!(
            deny_shape_of_files(&["package chaperone
authz.deny contains 1 if input.x
"]),
            Shape::MayBeUndefined
        );
        assert_eq!(
            deny_shape_of_files(&["package chaperone.other
x := 1
"]),
            Shape::NotInPolicies
        );
    }

    #[test]
    fn a_default_beside_a_multi_value_head_keeps_the_wrapper() {
        // Not valid together in OPA (compiling rejects it); in two files each parses, so
        // the classification must not assume either shape.
        assert_eq!(
            deny_shape_of_files(&[
                "package chaperone.authz\ndefault deny := []\n",
                "package chaperone.authz\ndeny contains 1 if input.x\n",
            ]),
            Shape::MayBeUndefined
        );
    }

    #[test]
    fn the_module_reads_direct_fields_and_wraps_the_rest() {
        let mut e = Engine::new();
        e.add_policy(
            "p.rego".into(),
            "package chaperone.authz\ndefault allow := false\ndeny contains 1 if input.x\n".into(),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let mods: Vec<&Module> = e.get_modules().iter().map(|m| &**m).collect();
        let data = Value::from_json_str(r#"{"chaperone": {"authz": {"credential": "c"}}}"#)
            .unwrap_or_else(|err| panic!("{err}"));
        let text = module_text(mods.iter().copied(), &data);
        assert!(
            text.contains("\tdata.chaperone.authz.allow, # allow\n"),
            "{text}"
        );
        assert!(
            text.contains("\tdata.chaperone.authz.deny, # deny\n"),
            "{text}"
        );
        // Defined nowhere: null; defined by data only: read directly.
        assert!(text.contains("\tnull, # approval\n"), "{text}");
        assert!(
            text.contains("\tdata.chaperone.authz.credential, # credential\n"),
            "{text}"
        );
        assert!(!text.contains("authz_deny"), "{text}");
        assert!(!text.contains("default"), "{text}");
        // The session package defines nothing here.
        assert!(text.contains("\tnull, # allow\n"), "{text}");
        // And the text is a valid module whose value `member` reads by field name.
        e.add_policy(DECISION_MODULE_PATH.into(), text.clone())
            .unwrap_or_else(|err| panic!("{err}\n{text}"));
        e.add_data(data).unwrap_or_else(|err| panic!("{err}"));
        e.set_input(Value::from_json_str(r#"{"x": true}"#).unwrap_or_else(|err| panic!("{err}")));
        let authz = e
            .eval_rule("data.__chaperone__.authz".into())
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(member(&authz, "authz", "allow"), &Value::from(false));
        assert_eq!(member(&authz, "authz", "credential"), &Value::from("c"));
        assert_eq!(member(&authz, "authz", "approval"), &Value::Null);
        assert_eq!(
            member(&authz, "authz", "deny")
                .as_set()
                .map(|s| s.len())
                .ok(),
            Some(1)
        );
        assert_eq!(member(&authz, "authz", "no_such_field"), &Value::Undefined);
        assert_eq!(member(&Value::Null, "authz", "allow"), &Value::Undefined);
    }
}
