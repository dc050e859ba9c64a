//! The `cluster_fallback_config_storage` URL.

use std::fmt;

/// Where the fallback config lives: `s3://bucket/prefix`,
/// `gcs://bucket/prefix` (or `gs://`), `azure://account/container/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageLocation {
    pub scheme: Scheme,
    /// Azure only: the storage account.
    pub account: Option<String>,
    /// The S3 or GCS bucket, or the Azure container.
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    S3,
    Gcs,
    Azure,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gcs",
            Scheme::Azure => "azure",
        }
    }
}

/// Why a storage URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationError {
    NoScheme,
    UnsupportedScheme(String),
    EmptyBucket,
    EmptyAccount,
    EmptyContainer,
    InvalidName(String),
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::NoScheme => f.write_str(
                "must look like s3://bucket/prefix, gcs://bucket/prefix or azure://account/container/prefix",
            ),
            LocationError::UnsupportedScheme(s) => write!(
                f,
                "has unsupported scheme `{s}://` (supported: s3://, gcs:// or gs://, azure://)"
            ),
            LocationError::EmptyBucket => f.write_str("has an empty bucket name"),
            LocationError::EmptyAccount => {
                f.write_str("has an empty account name (azure://account/container/prefix)")
            }
            LocationError::EmptyContainer => {
                f.write_str("has an empty container name (azure://account/container/prefix)")
            }
            LocationError::InvalidName(b) => write!(f, "has an invalid name `{b}`"),
        }
    }
}

impl std::error::Error for LocationError {}

/// Stores differ in what they allow; refuse only what can never be a
/// bucket, container or account in a URL path or host.
fn check_name(name: &str) -> Result<String, LocationError> {
    let valid = name.len() <= 255
        && !name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"?#%\\".contains(&b));
    if valid {
        Ok(name.to_string())
    } else {
        Err(LocationError::InvalidName(name.to_string()))
    }
}

impl StorageLocation {
    pub fn parse(url: &str) -> Result<Self, LocationError> {
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or(LocationError::NoScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" => Scheme::S3,
            "gcs" | "gs" => Scheme::Gcs,
            "azure" => Scheme::Azure,
            _ => return Err(LocationError::UnsupportedScheme(scheme.to_string())),
        };
        let (account, rest) = match scheme {
            Scheme::Azure => {
                let (account, rest) = rest.split_once('/').unwrap_or((rest, ""));
                if account.is_empty() {
                    return Err(LocationError::EmptyAccount);
                }
                (Some(check_name(account)?), rest)
            }
            _ => (None, rest),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(match scheme {
                Scheme::Azure => LocationError::EmptyContainer,
                _ => LocationError::EmptyBucket,
            });
        }
        Ok(StorageLocation {
            scheme,
            account,
            bucket: check_name(bucket)?,
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

    /// `s3://bucket/key`, `gcs://bucket/key`, `azure://account/container/key`,
    /// for log lines.
    pub fn url(&self, key: &str) -> String {
        match &self.account {
            Some(account) => format!("{}://{account}/{}/{key}", self.scheme.as_str(), self.bucket),
            None => format!("{}://{}/{key}", self.scheme.as_str(), self.bucket),
        }
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
    fn parses_gcs_and_azure_urls() {
        for url in ["gcs://b/p/q", "gs://b/p/q/"] {
            let l = StorageLocation::parse(url).unwrap();
            assert_eq!(
                (l.scheme, l.bucket.as_str(), l.prefix.as_str()),
                (Scheme::Gcs, "b", "p/q")
            );
            assert_eq!(l.url("k"), "gcs://b/k");
        }
        let l = StorageLocation::parse("azure://acct/cont/pre/fix").unwrap();
        assert_eq!(l.scheme, Scheme::Azure);
        assert_eq!(l.account.as_deref(), Some("acct"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("cont", "pre/fix"));
        assert_eq!(l.url("k"), "azure://acct/cont/k");
        let l = StorageLocation::parse("azure://acct/cont").unwrap();
        assert_eq!(l.prefix, "");
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
        assert_eq!(
            StorageLocation::parse("gs://"),
            Err(LocationError::EmptyBucket)
        );
        assert_eq!(
            StorageLocation::parse("azure://"),
            Err(LocationError::EmptyAccount)
        );
        assert_eq!(
            StorageLocation::parse("azure://acct"),
            Err(LocationError::EmptyContainer)
        );
        assert_eq!(
            StorageLocation::parse("azure://acct/"),
            Err(LocationError::EmptyContainer)
        );
        assert!(matches!(
            StorageLocation::parse("http://b/p"),
            Err(LocationError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            StorageLocation::parse("s3://my bucket/p"),
            Err(LocationError::InvalidName(_))
        ));
        assert!(matches!(
            StorageLocation::parse("s3://a?b/p"),
            Err(LocationError::InvalidName(_))
        ));
    }
}
