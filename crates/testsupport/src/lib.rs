//! chaperone-testsupport
//! Test support: certificates, a real echo upstream, mTLS clients, service processes.
pub mod certs;
pub mod client;
pub mod echo;
pub mod openbao;
