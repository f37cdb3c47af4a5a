//! [`Secret`]: a redacting, zeroize-on-drop string.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string (token, password, client secret, ...).
///
/// * `Debug` prints `Secret(..redacted..)`; there is no `Display` and no `Serialize`.
/// * The buffer is zeroed when the value is dropped (`Zeroizing<String>`).
/// * [`Secret::expose`] is the only way to the value; grep for it to audit uses.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wrap a value (the `String` is moved, not copied).
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret value.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..redacted..)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}
