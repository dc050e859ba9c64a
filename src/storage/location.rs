//! The `cluster_fallback_config_storage` URL.

use std::fmt;

/// Bucket and key prefix, from `s3://bucket/some/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageLocation {
    pub scheme: Scheme,
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    S3,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
        }
    }
}

/// Why a storage URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationError {
    NoScheme,
    UnsupportedScheme(String),
    EmptyBucket,
    InvalidBucket(String),
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::NoScheme => f.write_str("must look like s3://bucket/prefix"),
            LocationError::UnsupportedScheme(s) => {
                write!(f, "has unsupported scheme `{s}://` (supported: s3://)")
            }
            LocationError::EmptyBucket => {
                f.write_str("has an empty bucket name (s3://bucket/prefix)")
            }
            LocationError::InvalidBucket(b) => write!(f, "has an invalid bucket name `{b}`"),
        }
    }
}

impl std::error::Error for LocationError {}

impl StorageLocation {
    pub fn parse(url: &str) -> Result<Self, LocationError> {
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or(LocationError::NoScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" => Scheme::S3,
            _ => return Err(LocationError::UnsupportedScheme(scheme.to_string())),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::EmptyBucket);
        }
        // S3-compatible stores differ in what they allow; refuse only what
        // can never be a bucket in a URL path or host.
        let valid = bucket.len() <= 255
            && !bucket
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"?#%\\".contains(&b));
        if !valid {
            return Err(LocationError::InvalidBucket(bucket.to_string()));
        }
        Ok(StorageLocation {
            scheme,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The object key for `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// `s3://bucket/key`, for log lines.
    pub fn url(&self, key: &str) -> String {
        format!("{}://{}/{key}", self.scheme.as_str(), self.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let l = StorageLocation::parse("s3://my-bucket/some/prefix/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my-bucket", "some/prefix")
        );
        assert_eq!(l.key("0.1.0/config.json"), "some/prefix/0.1.0/config.json");
        assert_eq!(l.url("k"), "s3://my-bucket/k");
        let l = StorageLocation::parse("S3://bkt").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bkt", ""));
        assert_eq!(l.key("0.1.0/config.json"), "0.1.0/config.json");
    }

    #[test]
    fn refuses_bad_urls() {
        assert_eq!(
            StorageLocation::parse("my-bucket/p"),
            Err(LocationError::NoScheme)
        );
        assert_eq!(
            StorageLocation::parse("s3:///p"),
            Err(LocationError::EmptyBucket)
        );
        assert_eq!(
            StorageLocation::parse("s3://"),
            Err(LocationError::EmptyBucket)
        );
        assert!(matches!(
            StorageLocation::parse("http://b/p"),
            Err(LocationError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            StorageLocation::parse("s3://my bucket/p"),
            Err(LocationError::InvalidBucket(_))
        ));
        assert!(matches!(
            StorageLocation::parse("s3://a?b/p"),
            Err(LocationError::InvalidBucket(_))
        ));
    }
}
