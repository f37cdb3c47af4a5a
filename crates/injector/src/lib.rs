//! chaperone-injector: the Kubernetes mutating admission webhook that injects the
//! chaperone sidecar (SPEC §10).
//!
//! * [`InjectorConfig`] — the injector's YAML config (`chaperone injector --config FILE`).
//! * [`mutate`] / [`mutate_scoped`] — AdmissionReview v1 in, AdmissionReview v1 (JSONPatch) out.
//! * [`run`] / [`serve`] — the HTTPS server (`POST /mutate`, `POST /mutate/namespace`, `GET /healthz`).
//!
//! The injected sidecar is a native sidecar (first `initContainers` entry with
//! `restartPolicy: Always`), so Jobs complete and the proxy is up before agents start.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
mod mutate;
mod server;

pub use config::{
    InjectorConfig, PullPolicy, SidecarConfig, SvidConfig, SvidFiles, SvidSource, TlsFiles,
};
pub use error::InjectorError;
pub use mutate::{
    mutate, mutate_scoped, Scope, CONFIG_PATH, POLICY_DIR, RUN_DIR, SIDECAR_NAME, SVID_DIR,
};
pub use server::{run, serve, MAX_BODY_BYTES, TLS_RELOAD_INTERVAL};
