//! Fuzz `SpiffeId::parse`: never panics, and whatever it accepts is canonical:
//! it round-trips, splits into trust domain + path consistently and obeys the
//! SPEC §3 character rules.
#![no_main]

use chaperone_identity::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert!(s.len() <= chaperone_identity::MAX_SPIFFE_ID_LEN);
        assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), s);
        assert!(!id.trust_domain().is_empty());
        assert!(id
            .trust_domain()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        assert!(!id.path().ends_with('/'));
        for seg in id.segments() {
            assert!(!seg.is_empty() && seg != "." && seg != "..");
            assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        }
        assert_eq!(SpiffeId::parse(id.as_str()).ok().as_ref(), Some(&id));
    }
    // Identity patterns go through the same checks and must not panic either.
    let rule = chaperone_config::IdentityRule { pattern: s.to_owned(), attributes: Default::default() };
    let _ = chaperone_identity::IdentityMap::new(&[rule]);
});
