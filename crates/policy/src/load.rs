//! Discovery of policy and data files, and OPA-bundle style data merging.

use std::path::{Path, PathBuf};

use crate::PolicyError;

/// One file found under the configured policy paths.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The real path (used in error messages and test output).
    pub path: PathBuf,
    /// Path relative to the configured root, `/`-separated (used for the revision hash
    /// and to place data files in the `data` tree).
    pub rel: String,
    /// What the file is.
    pub kind: Kind,
}

/// Kind of a discovered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `.rego` module that is not a test.
    Rego,
    /// A `*_test.rego` module.
    RegoTest,
    /// A `data.json`, `data.yaml` or `data.yml` file.
    Data,
}

fn classify(name: &str) -> Option<Kind> {
    if name.ends_with("_test.rego") {
        Some(Kind::RegoTest)
    } else if name.ends_with(".rego") {
        Some(Kind::Rego)
    } else if matches!(name, "data.json" | "data.yaml" | "data.yml") {
        Some(Kind::Data)
    } else {
        None
    }
}

fn io_err(path: &Path, source: std::io::Error) -> PolicyError {
    PolicyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Walk every configured path (a directory is walked recursively in sorted order, hidden
/// entries skipped; a file is taken as-is) and return the relevant files.
pub(crate) fn discover(paths: &[PathBuf]) -> Result<Vec<Found>, PolicyError> {
    let mut out = Vec::new();
    for root in paths {
        let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
        if meta.is_file() {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(kind) = classify(&name) {
                out.push(Found {
                    path: root.clone(),
                    rel: name,
                    kind,
                });
            }
        } else {
            walk(root, root, &mut out)?;
        }
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Found>) -> Result<(), PolicyError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        entries.push(entry.path());
    }
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks (Kubernetes ConfigMaps are symlink farms).
        let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if let Some(kind) = classify(&name) {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(Found { path, rel, kind });
        }
    }
    Ok(())
}

/// Parse a data file into JSON, with `file:line:col` on errors.
pub(crate) fn parse_data(path: &Path, text: &str) -> Result<serde_json::Value, PolicyError> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    let value: serde_json::Value = if is_json {
        serde_json::from_str(text).map_err(|e| PolicyError::Data {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?
    } else if text.trim().is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            PolicyError::Data {
                path: path.to_path_buf(),
                line,
                column,
                message: e.to_string(),
            }
        })?
    };
    if !value.is_object() {
        return Err(PolicyError::Data {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "a data file must contain an object at its top level".into(),
        });
    }
    Ok(value)
}

/// The `data` path a data file is mounted at: its directory relative to the root.
pub(crate) fn data_prefix(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    parts.pop();
    parts
}

/// Merges data documents, remembering which file defined which leaf so that conflicts
/// name both files.
#[derive(Default)]
pub(crate) struct DataMerger {
    root: serde_json::Map<String, serde_json::Value>,
    /// (dotted key path, file) for every non-object value placed.
    origins: Vec<(String, PathBuf)>,
}

impl DataMerger {
    /// Merge `value` (an object) at `prefix`, loaded from `file`.
    pub(crate) fn merge(
        &mut self,
        prefix: &[String],
        value: serde_json::Value,
        file: &Path,
    ) -> Result<(), PolicyError> {
        let mut nested = value;
        for key in prefix.iter().rev() {
            let mut m = serde_json::Map::new();
            m.insert(key.clone(), nested);
            nested = serde_json::Value::Object(m);
        }
        let serde_json::Value::Object(obj) = nested else {
            return Ok(());
        };
        // Check first so a failed merge leaves nothing half-applied.
        let mut path = Vec::new();
        check(&self.root, &obj, &mut path, &self.origins, file)?;
        let mut path = Vec::new();
        insert(&mut self.root, obj, &mut path, &mut self.origins, file);
        Ok(())
    }

    /// The merged document.
    pub(crate) fn into_value(self) -> serde_json::Value {
        serde_json::Value::Object(self.root)
    }
}

fn origin_of(origins: &[(String, PathBuf)], key: &str) -> PathBuf {
    origins
        .iter()
        .find(|(k, _)| {
            k == key || k.starts_with(&format!("{key}.")) || key.starts_with(&format!("{k}."))
        })
        .map(|(_, f)| f.clone())
        .unwrap_or_default()
}

fn check(
    into: &serde_json::Map<String, serde_json::Value>,
    from: &serde_json::Map<String, serde_json::Value>,
    path: &mut Vec<String>,
    origins: &[(String, PathBuf)],
    file: &Path,
) -> Result<(), PolicyError> {
    for (k, v) in from {
        path.push(k.clone());
        if let Some(existing) = into.get(k) {
            match (existing, v) {
                (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                    check(a, b, path, origins, file)?;
                }
                _ => {
                    let key = path.join(".");
                    return Err(PolicyError::DataConflict {
                        first: origin_of(origins, &key),
                        key,
                        second: file.to_path_buf(),
                    });
                }
            }
        }
        path.pop();
    }
    Ok(())
}

fn insert(
    into: &mut serde_json::Map<String, serde_json::Value>,
    from: serde_json::Map<String, serde_json::Value>,
    path: &mut Vec<String>,
    origins: &mut Vec<(String, PathBuf)>,
    file: &Path,
) {
    for (k, v) in from {
        path.push(k.clone());
        match (into.get_mut(&k), v) {
            (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) => {
                insert(a, b, path, origins, file);
            }
            (_, v) => {
                origins.push((path.join("."), file.to_path_buf()));
                into.insert(k, v);
            }
        }
        path.pop();
    }
}
