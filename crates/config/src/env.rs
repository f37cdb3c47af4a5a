//! `${VAR}` expansion in string values, applied to the parsed YAML tree (so it can
//! never change the document's structure). `$${` is a literal `${`.

use serde_norway::Value;

use crate::locate::{join_index, join_key};

/// Expand every string value in `v` (map keys are left alone). Problems are
/// returned as `(key path, message)`; the offending string is left unexpanded.
pub(crate) fn expand_tree(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    match v {
        Value::String(s) => match expand(s, env) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(msg) => errors.push((path.to_string(), msg)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &join_index(path, i), env, errors);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                expand_tree(item, &join_key(path, &key_name(k)), env, errors);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, env, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A map key as it appears in a key path.
pub(crate) fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_string(),
        _ => "?".to_string(),
    }
}

/// Expand one string. `Ok(None)` when it contains nothing to expand.
pub(crate) fn expand(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return Err("unterminated `${` (write `$${` for a literal `${`)".to_string());
            };
            let name = &body[..end];
            if !valid_var_name(name) {
                return Err(format!(
                    "invalid environment variable reference `${{{name}}}`: names are [A-Za-z_][A-Za-z0-9_]* \
                     (write `$${{` for a literal `${{`)"
                ));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("orders.internal".to_string()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("${HOST}".to_string()),
            _ => None,
        }
    }

    fn ex(s: &str) -> Result<String, String> {
        expand(s, &env).map(|o| o.unwrap_or_else(|| s.to_string()))
    }

    #[test]
    fn expands_variables() {
        assert_eq!(
            ex("https://${HOST}/x").unwrap(),
            "https://orders.internal/x"
        );
        assert_eq!(
            ex("${HOST}${HOST}").unwrap(),
            "orders.internalorders.internal"
        );
        assert_eq!(ex("a${EMPTY}b").unwrap(), "ab");
        assert_eq!(ex("no vars").unwrap(), "no vars");
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(ex("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(ex("cost $5 $").unwrap(), "cost $5 $");
        assert_eq!(ex("$$x").unwrap(), "$$x");
        // `$` then `$${`: a lone dollar followed by an escaped `${`.
        assert_eq!(ex("$$${HOST}").unwrap(), "$${HOST}");
    }

    #[test]
    fn expansion_is_single_pass() {
        assert_eq!(ex("${DOLLAR}").unwrap(), "${HOST}");
    }

    #[test]
    fn errors() {
        assert_eq!(
            ex("${MISSING}").unwrap_err(),
            "environment variable `MISSING` is not set"
        );
        assert!(ex("${HOST").unwrap_err().contains("unterminated"));
        assert!(ex("${1X}")
            .unwrap_err()
            .contains("invalid environment variable reference"));
        assert!(ex("${}").unwrap_err().contains("invalid"));
        assert!(ex("${A:-b}").unwrap_err().contains("invalid"));
    }
}
