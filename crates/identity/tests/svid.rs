//! `validate_svid_leaf` on its own (no TLS).

#![allow(clippy::unwrap_used)]

use chaperone_identity::{svid_from_chain, validate_svid_leaf, IdentityError};
use chaperone_testsupport::certs::{KeyUsagePurpose, LeafSpec, TestCa};

const ID: &str = "spiffe://td.example/ns/a/sa/b";

fn err(spec: LeafSpec) -> String {
    let ca = TestCa::new("ca");
    validate_svid_leaf(ca.leaf(spec).der.as_ref())
        .unwrap_err()
        .to_string()
}

#[test]
fn accepts_a_valid_svid_and_reports_fields() {
    let ca = TestCa::new("ca");
    let c = ca.leaf(LeafSpec::svid(ID).with_serial(0xfeed));
    let info = validate_svid_leaf(c.der.as_ref()).unwrap();
    assert_eq!(info.id.as_str(), ID);
    assert_eq!(info.serial_hex, "00feed");
    assert_eq!(info.serial_hex, c.serial_hex);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(info.not_before <= now && now < info.not_after);
    // No keyUsage extension at all is fine, as is a leaf with DNS SANs besides the URI.
    assert!(validate_svid_leaf(
        ca.leaf(LeafSpec::svid(ID).with_key_usages(&[]))
            .der
            .as_ref()
    )
    .is_ok());
    assert!(validate_svid_leaf(
        ca.leaf(LeafSpec::svid(ID).with_dns(&["x.test"]))
            .der
            .as_ref()
    )
    .is_ok());
    assert_eq!(svid_from_chain(std::slice::from_ref(&c.der)).unwrap(), info);
}

#[test]
fn refuses_every_leaf_rule() {
    let e = err(LeafSpec::svid(ID).with_uri(ID));
    assert!(
        e.contains("exactly one URI SAN is required, found 2"),
        "{e}"
    );
    assert!(err(LeafSpec::default()).contains("no URI SAN"));
    assert!(err(LeafSpec::svid(ID).ca()).contains("CA certificate"));
    assert!(
        err(LeafSpec::svid(ID).with_key_usages(&[KeyUsagePurpose::KeyCertSign]))
            .contains("keyCertSign")
    );
    assert!(
        err(LeafSpec::svid(ID).with_key_usages(&[KeyUsagePurpose::CrlSign])).contains("cRLSign")
    );
    assert!(
        err(LeafSpec::svid("spiffe://TD.example/ns/a")).contains("trust domain must be lowercase")
    );
    assert!(err(LeafSpec::svid("https://td.example/ns/a")).contains("scheme"));
}

#[test]
fn refuses_garbage() {
    assert!(matches!(
        validate_svid_leaf(b""),
        Err(IdentityError::Certificate(_))
    ));
    assert!(matches!(
        validate_svid_leaf(b"\x30\x03\x02\x01\x01"),
        Err(IdentityError::Certificate(_))
    ));
    let ca = TestCa::new("ca");
    let mut der = ca.svid(ID).der.to_vec();
    der.push(0);
    assert!(matches!(
        validate_svid_leaf(&der),
        Err(IdentityError::Certificate(_))
    ));
    assert!(matches!(
        svid_from_chain(&[]),
        Err(IdentityError::NoPeerCertificate)
    ));
}
