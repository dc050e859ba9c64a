//! `http(s)://host[:port][/path]`: the one parser for every URL a backend
//! is pointed at (the S3, GCS and Azure endpoint overrides, a service
//! account's `token_uri`).
//!
//! A leaf module: it depends on nothing else in the crate, so every backend
//! (and `gcp_auth`) can use it without depending on each other.
//!
//! Requests carry only the authority (`:authority` = `host[:port]`); TLS is
//! the transport socket of the Envoy cluster that carries them, which the
//! filter cannot see. The scheme ([`UrlScheme`]) says what that cluster is
//! expected to do: the store announces it once (an `http://` endpoint off
//! this host as a warning) and points at the cluster's TLS statistics when
//! an `https://` connection fails.

use std::fmt;

/// The scheme an endpoint was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlScheme {
    Http,
    Https,
}

impl UrlScheme {
    /// `http` or `https`, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }
}

/// A base URL that request paths are appended to: `http(s)://host[:port][/base]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: UrlScheme,
    /// `host[:port]`: the `:authority` of every request.
    pub authority: String,
    /// Prefix of every request path: empty, or starting with `/`; never
    /// ending with `/`. It may carry a query (`?`), which this parser does
    /// not refuse; callers that append paths refuse it
    /// ([`Endpoint::has_query`], [`EndpointError::Query`]).
    pub base_path: String,
}

impl Endpoint {
    /// Parses a base URL (surrounding whitespace ignored, trailing `/`
    /// trimmed from the path). See [`split_url`] for what is refused.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let parts = split_url(url)?;
        Ok(Endpoint {
            scheme: parts.scheme,
            authority: parts.authority.to_string(),
            base_path: parts.path.trim_end_matches('/').to_string(),
        })
    }

    /// Whether the base path carries a query (`?`).
    pub fn has_query(&self) -> bool {
        self.base_path.contains('?')
    }
}

/// A URL split into its parts, borrowed from the input, the path kept as
/// written (for a URL requests go to as is, such as a `token_uri`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub scheme: UrlScheme,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Empty, or starting with `/`; it may carry a query.
    pub path: &'a str,
}

/// Splits `http(s)://host[:port][/path]`, surrounding whitespace ignored.
///
/// The authority is everything up to the first `/`. Refused: another
/// scheme or none; an empty host (`http://`, `http:///x`, `http://:80`);
/// user information (`user@host`); a query or spaces in the authority;
/// a fragment (`#`) anywhere; spaces or control characters in the path.
pub fn split_url(url: &str) -> Result<UrlParts<'_>, EndpointError> {
    let url = url.trim();
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (UrlScheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (UrlScheme::Https, rest)
    } else {
        return Err(EndpointError::NoScheme);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if rest.contains('#') {
        return Err(EndpointError::Fragment);
    }
    if authority.contains('?') {
        return Err(EndpointError::Query);
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(EndpointError::NoHost);
    }
    if authority.contains('@') {
        return Err(EndpointError::UserInfo);
    }
    if !authority.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EndpointError::HostCharacters);
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EndpointError::PathCharacters);
    }
    Ok(UrlParts {
        scheme,
        authority,
        path,
    })
}

/// Why a URL was refused. The texts complete "`<field>` …".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// Neither `http://` nor `https://`.
    NoScheme,
    /// Nothing (or only a port) where the host goes.
    NoHost,
    /// `user@host`: credentials have their own settings.
    UserInfo,
    /// Spaces, control or non-ASCII characters in `host[:port]`.
    HostCharacters,
    /// Spaces or control characters in the path.
    PathCharacters,
    /// A query (`?`) where there can be none: in the authority, or (refused
    /// by the caller) in a base URL that paths are appended to.
    Query,
    /// A fragment (`#`), never sent in a request.
    Fragment,
}

impl EndpointError {
    /// The text that completes "`<field>` …", for callers that word some
    /// refusals their own way and keep the others.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointError::NoScheme => "must start with http:// or https://",
            EndpointError::NoHost => "must name a host, as in http://127.0.0.1:9000",
            EndpointError::UserInfo => "must not carry user information (`user@host`)",
            EndpointError::HostCharacters => "has a host with spaces or non-ASCII characters",
            EndpointError::PathCharacters => "has a path with spaces or control characters",
            EndpointError::Query => "must not have a query (?)",
            EndpointError::Fragment => "must not have a fragment (#)",
        }
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for EndpointError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(scheme: UrlScheme, authority: &str, base_path: &str) -> Endpoint {
        Endpoint {
            scheme,
            authority: authority.into(),
            base_path: base_path.into(),
        }
    }

    #[test]
    fn keeps_http_and_https() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9000"),
            Ok(endpoint(UrlScheme::Http, "127.0.0.1:9000", ""))
        );
        assert_eq!(
            Endpoint::parse("https://storage.googleapis.com"),
            Ok(endpoint(UrlScheme::Https, "storage.googleapis.com", ""))
        );
        assert_eq!(UrlScheme::Http.as_str(), "http");
        assert_eq!(UrlScheme::Https.as_str(), "https");
    }

    #[test]
    fn splits_authority_and_base_path() {
        assert_eq!(
            Endpoint::parse(" https://gw.example:8443/gcs/api "),
            Ok(endpoint(UrlScheme::Https, "gw.example:8443", "/gcs/api"))
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:10000/devstoreaccount1"),
            Ok(endpoint(
                UrlScheme::Http,
                "[::1]:10000",
                "/devstoreaccount1"
            ))
        );
        // A query is split off by no one here: it stays in the path.
        let e = Endpoint::parse("http://h/base?x=1").unwrap();
        assert_eq!(e.base_path, "/base?x=1");
        assert!(e.has_query());
        assert!(!Endpoint::parse("http://h/base").unwrap().has_query());
    }

    #[test]
    fn trims_trailing_slashes() {
        for (url, base) in [
            ("http://h/", ""),
            ("http://h//", ""),
            ("http://h/base/", "/base"),
            ("http://h/a/b///", "/a/b"),
        ] {
            assert_eq!(Endpoint::parse(url).unwrap().base_path, base, "{url}");
        }
    }

    #[test]
    fn split_url_keeps_the_path_as_written() {
        assert_eq!(
            split_url("https://oauth2.googleapis.com/token"),
            Ok(UrlParts {
                scheme: UrlScheme::Https,
                authority: "oauth2.googleapis.com",
                path: "/token",
            })
        );
        let p = split_url("http://127.0.0.1:9024/oauth2/token/?a=b").unwrap();
        assert_eq!(
            (p.scheme, p.authority, p.path),
            (UrlScheme::Http, "127.0.0.1:9024", "/oauth2/token/?a=b")
        );
        assert_eq!(split_url("https://t.example").unwrap().path, "");
    }

    #[test]
    fn refusals() {
        for (bad, error) in [
            ("127.0.0.1:9000", EndpointError::NoScheme),
            ("gs://bkt", EndpointError::NoScheme),
            ("ftp://x", EndpointError::NoScheme),
            ("HTTP://x", EndpointError::NoScheme),
            ("", EndpointError::NoScheme),
            ("http://", EndpointError::NoHost),
            ("http:///base", EndpointError::NoHost),
            ("https://:443/x", EndpointError::NoHost),
            ("http://user@host", EndpointError::UserInfo),
            ("http://u:p@host/x", EndpointError::UserInfo),
            ("http://ho st/x", EndpointError::HostCharacters),
            ("http://hö.example", EndpointError::HostCharacters),
            ("http://host/a b", EndpointError::PathCharacters),
            ("http://host/a\tb", EndpointError::PathCharacters),
            ("http://host/a\nb", EndpointError::PathCharacters),
            ("http://host?x=1", EndpointError::Query),
            ("http://host#f", EndpointError::Fragment),
            ("http://host/a#b", EndpointError::Fragment),
            ("http://host/a?b#c", EndpointError::Fragment),
        ] {
            assert_eq!(Endpoint::parse(bad), Err(error), "{bad:?}");
            assert_eq!(split_url(bad).map(|_| ()), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn messages_complete_the_field_name() {
        assert_eq!(
            EndpointError::NoScheme.to_string(),
            "must start with http:// or https://"
        );
        for e in [
            EndpointError::NoScheme,
            EndpointError::NoHost,
            EndpointError::UserInfo,
            EndpointError::HostCharacters,
            EndpointError::PathCharacters,
            EndpointError::Query,
            EndpointError::Fragment,
        ] {
            let text = e.to_string();
            assert!(
                text.starts_with("must ") || text.starts_with("has "),
                "{text}"
            );
        }
    }
}
