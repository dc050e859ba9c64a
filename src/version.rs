//! Semantic versions, to pick the newest snapshot *older* than this build
//! when its own version has none (an upgrade during an outage).
//!
//! `MAJOR.MINOR.PATCH[-PRE][+BUILD]` with Semantic Versioning 2.0.0
//! precedence: numbers compare numerically, a pre-release sorts before
//! its release, pre-release identifiers compare numerically when both are
//! numbers and as ASCII otherwise (numbers first), build metadata is
//! ignored. A folder name that is not a version is no candidate.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Pre-release identifiers (`rc.1` → `["rc", "1"]`); empty for a release.
    pub pre: Vec<String>,
    /// The text it was parsed from (the folder name).
    pub text: String,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let core_pre = text.split_once('+').map_or(text, |(v, _)| v);
        let (core, pre) = match core_pre.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (core_pre, None),
        };
        let mut nums = core.split('.');
        let mut num = || -> Option<u64> {
            let n = nums.next()?;
            let plain = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            // No leading zeros (semver 2.0.0 §2).
            (plain && (n == "0" || !n.starts_with('0')))
                .then(|| n.parse().ok())
                .flatten()
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if nums.next().is_some() {
            return None;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                let ids: Vec<String> = p.split('.').map(str::to_string).collect();
                let valid = ids.iter().all(|i| {
                    !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
                if !valid {
                    return None;
                }
                ids
            }
        };
        Some(Version {
            major,
            minor,
            patch,
            pre,
            text: text.to_string(),
        })
    }
}

fn compare_ids(a: &str, b: &str) -> Ordering {
    let num = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        match compare_ids(a, b) {
                            Ordering::Equal => {}
                            o => return o,
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The folder names that are versions older than `own`, newest first.
pub fn older_than(own: &str, names: &[String]) -> Vec<String> {
    let Some(own) = Version::parse(own) else {
        return Vec::new();
    };
    let mut older: Vec<Version> = names
        .iter()
        .filter_map(|n| Version::parse(n))
        .filter(|v| *v < own)
        .collect();
    // Precedence ignores build metadata, so `1.0.0+a` and `1.0.0+b` tie:
    // the text breaks the tie, which keeps the order deterministic and
    // puts a folder listed twice next to itself for `dedup`.
    older.sort_by(|a, b| b.cmp(a).then_with(|| a.text.cmp(&b.text)));
    older.dedup_by(|a, b| a.text == b.text);
    older.into_iter().map(|v| v.text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn semver_precedence() {
        // The example chain of semver 2.0.0 §11.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in chain.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0.0+build.5").cmp(&v("1.0.0")), Ordering::Equal);
    }

    #[test]
    fn non_versions_are_no_candidates() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.x",
            "v1.2.3",
            "1.2.3-",
            "1.2.3-a..b",
            "latest",
            "1.2.3-é",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn older_versions_newest_first_never_newer() {
        let names: Vec<String> = [
            "0.0.9",
            "0.1.0",
            "0.2.0",
            "0.0.10",
            "junk",
            "0.1.0-rc.1",
            "0.0.9",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            older_than("0.1.0", &names),
            ["0.1.0-rc.1", "0.0.10", "0.0.9"]
        );
        assert!(older_than("not-a-version", &names).is_empty());
    }

    /// Found by fuzzing: build metadata ties precedence, and a folder
    /// listed twice with a tied one between came back twice.
    #[test]
    fn older_than_returns_each_folder_once_in_a_fixed_order() {
        let names: Vec<String> = ["1.0.0+a", "1.0.0+b", "1.0.0+a", "0.9.0", "1.0.0+b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(older_than("2.0.0", &names), ["1.0.0+a", "1.0.0+b", "0.9.0"]);
        let mut reversed = names.clone();
        reversed.reverse();
        assert_eq!(older_than("2.0.0", &reversed), older_than("2.0.0", &names));
    }
}
