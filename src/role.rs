//! What a root context does in its process: drive, serve, or both
//! (plugin JSON `role`).
//!
//! In Envoy the filter's root contexts live on the threads that serve
//! requests, so whichever of them holds the driver lease polls the CP,
//! imports, exports, hashes and validates between that worker's requests,
//! and its clients wait meanwhile. Envoy can also run the same module as a
//! singleton bootstrap service (`envoy.bootstrap.wasm`, `singleton: true`)
//! on the main thread, which serves no requests; with the same `vm_id` it
//! shares the filter's shared data (measured with Envoy 1.40). Giving the
//! service [`Role::Driver`] and the filter [`Role::Worker`] keeps every
//! piece of driver work off the request threads. [`Role::Any`], the
//! default, is for hosts without such a service: every root may drive,
//! through the lease ([`crate::process`]).

/// A root context's part in the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// May take the driver lease, and serves requests.
    #[default]
    Any,
    /// Never drives: serves requests with what a driver publishes.
    Worker,
    /// May take the driver lease; serves nothing, so it never loads the
    /// published config for routing (a bootstrap service).
    Driver,
}

impl Role {
    /// The names the plugin JSON uses.
    pub const NAMES: [(&'static str, Role); 3] = [
        ("any", Role::Any),
        ("worker", Role::Worker),
        ("driver", Role::Driver),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, role)| role)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("any", |&(n, _)| n)
    }

    /// Whether a root with this role may take the driver lease.
    pub fn drives(self) -> bool {
        matches!(self, Role::Any | Role::Driver)
    }

    /// Whether a root with this role routes requests.
    pub fn serves(self) -> bool {
        matches!(self, Role::Any | Role::Worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, role) in Role::NAMES {
            assert_eq!(Role::from_name(name), Some(role));
            assert_eq!(role.name(), name);
        }
        assert_eq!(Role::from_name("Worker"), None);
        assert!(Role::Any.drives() && Role::Any.serves());
        assert!(!Role::Worker.drives() && Role::Worker.serves());
        assert!(Role::Driver.drives() && !Role::Driver.serves());
    }

    #[test]
    fn the_plugin_json_names_it() {
        use crate::settings::Settings;
        let env = |_: &str| None;
        let parse = |json: &str| Settings::parse(json.as_bytes(), &env).map(|s| s.role);
        assert_eq!(parse("{}"), Ok(Role::Any));
        assert_eq!(parse(r#"{"role":"worker"}"#), Ok(Role::Worker));
        assert_eq!(parse(r#"{"role":"driver"}"#), Ok(Role::Driver));
        let e = parse(r#"{"role":"main"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid plugin configuration: `role` must be "any", "worker" or "driver""#
        );
        assert_eq!(parse(r#"{"role":1}"#).unwrap_err().field, "role");
    }
}
