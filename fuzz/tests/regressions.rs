//! One test per bug the fuzz targets (or their seed corpus) found, each
//! through the crate's public API with the minimised input, which is also
//! kept in `regressions/<target>/` and `corpus/<target>/`.
//!
//! A new test here fails until its bug is fixed in `src/`; a guard in the
//! harness (`known` in `src/lib.rs`) may skip the input meanwhile, and
//! goes with the fix so the fuzzer checks it again.
//! Run with `cd fuzz && cargo test` (stable; debug build, so arithmetic
//! overflow panics as it does in the fuzz builds).

use fallback_config::clock::Now;
use fallback_config::election::{Election, LeaseRecord, Step};
use fallback_config::settings::ElectionSettings;
use fallback_config::storage::ObjectStore;
use fallback_config::time::Timestamp;
use fallback_config::version;
use fallback_config_fuzz::{input, now};
use std::path::Path;
use std::time::Duration;

fn regression(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("regressions")
            .join(path),
    )
    .expect("the recorded input")
}

/// dates: `parse_rfc3339` reads the offset's hours and minutes with
/// `i64::parse`, which accepts a sign, so `+02:-3` is taken as
/// 2 h − 3 min. RFC 3339 `time-numoffset` is `("+" / "-") 2DIGIT ":" 2DIGIT`.
#[test]
fn rfc3339_offset_fields_are_two_digits() {
    let found = String::from_utf8(regression("dates/rfc3339-signed-offset")).unwrap();
    assert_eq!(found, "2015-08-30T14:36:00+02:-3");
    for bad in [
        found.as_str(),
        "2015-08-30T14:36:00++1:00",
        "2015-08-30T14:36:00+-1:00",
        "2015-08-30T14:36:00-02:+0",
    ] {
        assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
    }
    // What RFC 3339 allows still parses.
    assert_eq!(
        Timestamp::parse_rfc3339("2015-08-30T14:36:00+02:00"),
        Some(Timestamp::from_secs(1_440_938_160))
    );
}

/// dates, s3_response: `parse_http_date` computes `days * 86_400`
/// unchecked: a `Date` or `Last-Modified` with a 12-digit year overflows
/// (panics in debug builds, wraps to a wrong time in release). Found by
/// the fuzzer through `ObjectStore::read_result`. IMF-fixdate years are
/// four digits.
#[test]
fn http_date_with_a_huge_year_is_refused() {
    let found = String::from_utf8(regression("dates/http-date-huge-year")).unwrap();
    assert_eq!(Timestamp::parse_http_date(&found), None, "{found}");
    assert_eq!(
        Timestamp::parse_http_date("Sun, 06 Nov 9223372036854775807 08:49:37 GMT"),
        None
    );
    assert_eq!(
        Timestamp::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(Timestamp::from_secs(784_111_777))
    );
    // The fuzzer's way there: a store's `Date` header (minimised).
    let response = input::response(&regression("s3_response/date-huge-year"));
    let object = fallback_config_fuzz::s3_store()
        .read_result(response)
        .expect("a 200 is read");
    assert_eq!(object.date, None);
}

/// version: `older_than` sorts by precedence, which ignores build
/// metadata, then dedups adjacent equal texts only: a folder listed twice
/// with an equal-precedence one between comes back twice.
#[test]
fn older_than_returns_each_folder_once() {
    let text = String::from_utf8(regression("version/repeated-folder")).unwrap();
    let mut lines = text.split('\n');
    let own = lines.next().unwrap();
    let names: Vec<String> = lines.map(str::to_string).collect();
    let older = version::older_than(own, &names);
    let mut unique = older.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(older.len(), unique.len(), "{older:?}");
    assert_eq!(older.len(), 2, "{older:?}");
}

/// election: a stored lease (or `config.json`) with term `u64::MAX`
/// makes `Election::on_read` compute `min_term + 1`: a panic in debug
/// builds, and in release an acquisition with term 0, below every term a
/// fence compares against. The fuzzer found the second way there: a lease
/// with `u64::MAX - 1`, taken over with `u64::MAX`, lost for want of
/// renewal, then read again (`next-to-last-term`). No term above
/// `u64::MAX` exists, so such a lease must not be taken over at all.
#[test]
fn lease_with_the_last_terms_is_not_taken_over_with_term_0() {
    for (path, stored) in [
        ("election_lease/last-term", u64::MAX),
        ("election_lease/next-to-last-term", u64::MAX - 1),
    ] {
        let data = regression(path);
        let response = input::response(&data);
        let record = LeaseRecord::decode(&response.body).unwrap();
        assert_eq!(record.term, stored);
        let result = fallback_config_fuzz::s3_store().read_result(response);
        let settings = ElectionSettings {
            lease_ttl: Duration::from_secs(30),
            renew_interval: Duration::from_secs(10),
        };
        let mut e = Election::new(settings, "node-a".into());
        let mut out = Vec::new();
        let mut t = now();
        // Two rounds, 45 s apart: the lease is expired by the store's
        // clock each time (an hour old, ttl 30 s), and a lease this node
        // took in the first round is not renewed in the second.
        for _ in 0..2 {
            if let Some((Step::Read, _)) = e.poll(t, &mut out) {
                match e.on_read(result.clone(), t, &mut out) {
                    Some((Step::Write { record, .. }, Some(kind))) => {
                        assert!(record.term > stored, "{path}: acquires {record:?}");
                        e.on_write(kind, Ok(Some("\"w\"".into())), t.mono, t, &mut out);
                    }
                    None => {}
                    other => panic!("{path}: unexpected {other:?}"),
                }
            }
            t = Now {
                mono: t.mono.plus(Duration::from_secs(45)),
                wall: t.wall.plus(Duration::from_secs(45)),
            };
        }
        assert!(e.held_term().is_none_or(|term| term > stored), "{path}");
    }
}

/// s3 and azure: a listing's root element carries attributes on every
/// real server (`<ListBucketResult xmlns="…">`, `<EnumerationResults
/// ServiceEndpoint="…" ContainerName="…">`); `list_result` looked for the
/// bare tag and refused every real answer as unreadable. Found by the
/// seed corpus; fixed in `storage::xml::elements` meanwhile.
#[test]
fn list_answers_with_attributes_are_read() {
    let versions = |store: &ObjectStore, path: &str| {
        store
            .list_result(input::response(&regression(path)))
            .map(|(names, next)| (names, next.is_some()))
    };
    assert_eq!(
        versions(
            fallback_config_fuzz::s3_store(),
            "s3_response/list-with-xmlns"
        ),
        Ok((
            vec![
                "0.1.0".to_string(),
                "0.0.9-rc.1".to_string(),
                "a&b ".to_string()
            ],
            true
        ))
    );
    assert_eq!(
        versions(
            fallback_config_fuzz::azure_store(),
            "azure_response/list-with-attributes"
        ),
        Ok((vec!["0.1.0".to_string(), "0.0.9".to_string()], true))
    );
}

/// The harness's clock: a wall time in 2027 (sanity for the tests above).
#[test]
fn harness_clock_is_2027() {
    let t: Now = now();
    assert!(t.wall.rfc3339().starts_with("2027-01-15"));
}
