//! chaperone-credentials
