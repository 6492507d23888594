//! A wrapper that keeps secrets and card data out of logs, panics and error bodies.
//!
//! `Secret<T>` prints `***` through both `Debug` and `Display`, and it implements neither
//! `Serialize` nor `Deref`: the only way to the value is [`Secret::expose`], which makes every
//! place that touches the raw value easy to find with a grep.

use std::fmt;

/// A value that must never be printed: API secrets, card numbers, CVCs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The raw value. Call it only where the value leaves the process on purpose (a signature,
    /// a request body to the provider), never to format it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

/// Reading a secret from JSON is safe (writing one is not, so there is no `Serialize`).
impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Secret<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_mask_the_value() {
        let secret = Secret::new(String::from("sk_live_very_secret"));
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "sk_live_very_secret");
    }
}
