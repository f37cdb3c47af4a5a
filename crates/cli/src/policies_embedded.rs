//! The example policy library, embedded at build time (see build.rs).
include!(concat!(env!("OUT_DIR"), "/policies_embedded.rs"));
