//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading, compiling or testing policies.
///
/// Evaluation itself never returns this type: decisions fail closed and carry
/// their error as a string inside [`crate::Decision`].
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A configured path or a file below it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Rego file failed to parse or compile. The message carries `file:line:col`.
    #[error("{0}")]
    Rego(String),
    /// A data file is not valid JSON/YAML (message carries `file:line:col`) or not an object.
    #[error("{path}:{line}:{column}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Two data files define the same key.
    #[error("data conflict at data.{key}: defined by both {first} and {second}")]
    DataConflict {
        /// Dotted path of the conflicting key below `data`.
        key: String,
        /// The file loaded first.
        first: PathBuf,
        /// The file that conflicts with it.
        second: PathBuf,
    },
    /// No `.rego` files were found under the configured paths.
    #[error("no .rego files found under {0}")]
    NoPolicies(String),
    /// Writing test output failed.
    #[error("writing test output: {0}")]
    Output(#[source] std::io::Error),
}
