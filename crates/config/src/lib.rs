//! chaperone configuration: raw serde structs -> `validate()` -> typed [`Config`].
//!
//! PUBLIC API CONTRACT (other crates rely on it; keep these names):
//! - [`load`]`(path) -> Result<Config, ConfigErrors>`
//! - [`from_str`]`(yaml, source_path) -> Result<Config, ConfigErrors>`
//! - [`from_str_with_env`]`(yaml, source_path, env)`: the same with an explicit environment
//! - [`parse_duration`]`("30s") -> Result<Duration, String>`
//! - [`ConfigError`] displays as `file:line:col: key.path: message`.
//!
//! Pipeline: the YAML text is parsed once by `serde_norway` into a tree; `${VAR}`
//! references in string values are expanded on that tree (never changing its
//! structure); each section (and each route / credential / identity) is then
//! deserialized on its own into raw structs that reject unknown keys, and checked
//! semantically. Every problem is collected, named by its dotted key path and located
//! with a `file:line:col` from a YAML event scan of the source.
//!
//! Validation never touches the file system: referenced files need not exist (the
//! runtime loads them). Relative paths are resolved against the config file's directory.

#![deny(missing_docs)]

mod checks;
mod env;
mod locate;
mod raw;
mod types;
mod validate;

pub use types::*;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem in a config file, located by key path and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file (as given to [`load`] / [`from_str`]).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key path, e.g. `routes[0].upstream`; `(document)` for the file as a whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

/// Every problem found (validation does not stop at the first one), ordered by position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Load and validate a config file. Environment variables come from the process.
///
/// The path is made absolute first, so `Config::source` and every relative path in
/// the file stay valid if the working directory changes later.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let file_error = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.clone(),
            line: 1,
            column: 1,
            key: "(document)".into(),
            message,
        }])
    };
    let meta =
        std::fs::metadata(&path).map_err(|e| file_error(format!("cannot read config: {e}")))?;
    if meta.len() > validate::MAX_CONFIG_BYTES as u64 {
        return Err(file_error(format!(
            "config is larger than {} bytes",
            validate::MAX_CONFIG_BYTES
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| file_error(format!("cannot read config: {e}")))?;
    from_str(&text, &path)
}

/// Parse and validate YAML text; `source` names the file for errors and relative paths.
/// Environment variables come from the process.
pub fn from_str(yaml: &str, source: &Path) -> Result<Config, ConfigErrors> {
    from_str_with_env(yaml, source, &|name| std::env::var(name).ok())
}

/// [`from_str`] with an explicit environment: `env(name)` returns the value of `${name}`
/// (and of `NODE_NAME`, `POD_NAMESPACE`, `POD_NAME` for [`Environment`] defaults).
pub fn from_str_with_env(
    yaml: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    validate::run(yaml, source, env)
}

/// Parse `"500ms"`, `"30s"`, `"15m"`, `"1h"`, `"1h30m"`.
///
/// A duration is one or more `<digits><unit>` groups with units `h`, `m`, `s`, `ms`,
/// each used at most once and in that order. `"0s"` parses (callers decide whether
/// zero is allowed); signs, fractions, spaces and overflow are errors.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {s:?} (expected e.g. \"500ms\", \"30s\", \"15m\", \"1h30m\")");
    if s.is_empty() {
        return Err(invalid());
    }
    // Unit rank: h=0, m=1, s=2, ms=3 (must strictly increase).
    let mut last_rank: Option<u8> = None;
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (rank, unit_len, part) = if rest.starts_with("ms") {
            (3, 2, Some(Duration::from_millis(n)))
        } else if rest.starts_with('h') {
            (0, 1, n.checked_mul(3600).map(Duration::from_secs))
        } else if rest.starts_with('m') {
            (1, 1, n.checked_mul(60).map(Duration::from_secs))
        } else if rest.starts_with('s') {
            (2, 1, Some(Duration::from_secs(n)))
        } else {
            return Err(invalid());
        };
        if last_rank.is_some_and(|r| r >= rank) {
            return Err(format!(
                "invalid duration {s:?}: units must appear once each, largest first (h, m, s, ms)"
            ));
        }
        last_rank = Some(rank);
        let part = part.ok_or_else(|| format!("duration {s:?} is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1h2m3s4ms").unwrap(),
            Duration::from_millis(3_723_004)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "",
            "30",
            "s",
            "-1s",
            "+1s",
            "1.5s",
            " 1s",
            "1s ",
            "1 s",
            "1d",
            "1us",
            "1S",
            "30m1h",
            "1m1m",
            "1s1m",
            "1h1h",
            "ms",
            "1sm",
            "１s",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("1x").unwrap_err().contains("\"1x\""));
    }
}
