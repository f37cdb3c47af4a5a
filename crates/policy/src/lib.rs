//! chaperone-policy: Rego policy for chaperone, evaluated in-process with regorus.
//!
//! * [`PolicySet::load`] reads policy paths the way OPA reads a bundle:
//!   - every `*.rego` file, recursively, in sorted order, skipping hidden entries
//!     (names starting with `.`, e.g. Kubernetes' `..data` symlink farm internals);
//!   - files **named** `data.json`, `data.yaml` or `data.yml` are data: `DIR/data.json` is
//!     merged at the root of `data`, `DIR/a/b/data.yaml` under `data.a.b`. Other `.json` /
//!     `.yaml` files (test fixtures, inputs) are ignored. Two files defining the same key is
//!     an error naming both files;
//!   - `*_test.rego` files are **skipped** by the sidecar (tests may mock `data` or carry
//!     large fixtures; they never affect production decisions) and loaded only by
//!     [`run_tests`].
//! * [`PolicySet::eval_call`] / [`PolicySet::eval_session`] evaluate `data.chaperone.authz`
//!   and `data.chaperone.session`. They never fail: any error, type error, conflict or
//!   timeout yields a denying decision carrying the error. By default the set is compiled
//!   to regorus's VM bytecode (`vm.rs`) and hardened so that a runtime error inside any
//!   rule body fails the evaluation as it does in the interpreter (`harden.rs`).
//! * [`PolicyHandle`] holds the live set for hot reload; [`PolicyWatcher`] polls files.
//! * [`run_tests`] backs `chaperone policy test`, [`eval_report`] backs `chaperone policy eval`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decision;
mod error;
mod handle;
mod harden;
mod load;
mod report;
mod set;
mod testrun;
mod value;
mod vm;

pub use error::PolicyError;
pub use handle::{PolicyHandle, PolicyWatcher, ReloadOutcome};
pub use regorus::Value;
pub use report::{eval_report, is_session_input, EvalReport, Explanation};
pub use set::{
    Decision, EngineChoice, PolicyOptions, PolicySet, SessionDecision, AUTHZ_PACKAGE,
    DEFAULT_EVAL_TIMEOUT, SESSION_PACKAGE,
};
pub use testrun::{run_tests, TestSummary};
pub use value::{json_to_value, parse_duration};

#[cfg(test)]
mod assert_traits {
    fn send_sync<T: Send + Sync>() {}
    #[test]
    fn policy_types_are_send_sync() {
        send_sync::<super::PolicySet>();
        send_sync::<super::PolicyHandle>();
    }
}
