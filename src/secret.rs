//! A string that must never reach a log.

use std::fmt;

/// Holds a credential (secret key, session token, ...). `Debug` and
/// `Display` print `***`, so a secret cannot leak through `{:?}` of any
/// struct that contains one; the value is read with [`Secret::expose`],
/// which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let s = Secret::new("wJalrXUtnFEMI");
        assert!(!format!("{s:?} {s}").contains("wJalr"));
        assert_eq!(s.expose(), "wJalrXUtnFEMI");
    }
}
