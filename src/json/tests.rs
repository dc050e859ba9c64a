//! The reader and writer against serde_json, the reference they replace.

use super::*;
use serde_json::value::RawValue;

/// Ours, as serde_json's tree (floats converted by Rust's own parser,
/// correctly rounded as serde_json's `float_roundtrip` is).
fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Number(Number::U64(n)) => (*n).into(),
        Value::Number(Number::I64(n)) => (*n).into(),
        Value::Number(Number::Float(text)) => {
            let f: f64 = text.parse().unwrap();
            serde_json::Number::from_f64(f).unwrap().into()
        }
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => items.iter().map(to_serde).collect(),
        Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), to_serde(v)))
                .collect(),
        ),
    }
}

/// Both parse `text` alike: both refuse it, or both give the same tree.
fn same_as_serde(text: &[u8]) -> Result<Value, Error> {
    let ours = parse(text);
    let theirs = serde_json::from_slice::<serde_json::Value>(text);
    match (&ours, &theirs) {
        (Ok(o), Ok(t)) => assert_eq!(&to_serde(o), t, "{}", String::from_utf8_lossy(text)),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "{}: ours {ours:?}, serde_json {theirs:?}",
            String::from_utf8_lossy(text)
        ),
    }
    // Skipping checks exactly what parsing checks.
    let mut r = Reader::new(text);
    assert_eq!(
        r.skip().and_then(|()| r.end()).is_ok(),
        ours.is_ok(),
        "{}",
        String::from_utf8_lossy(text)
    );
    ours
}

fn kind(text: &[u8]) -> ErrorKind {
    same_as_serde(text).unwrap_err().kind
}

#[test]
fn strings_and_their_escapes() {
    for (text, expected) in [
        (r#""""#, ""),
        (r#""plain""#, "plain"),
        (r#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
        (r#""\u00e9\u00E9""#, "éé"),
        (r#""\u0000\u001f""#, "\u{0}\u{1f}"),
        (r#""\uD83D\uDE00 \ud83d\ude00""#, "😀 😀"),
        (r#""\uDBFF\uDFFF""#, "\u{10ffff}"),
        (r#""\uFFFF""#, "\u{ffff}"),
        ("\"é€😀\u{7f}\"", "é€😀\u{7f}"),
        (r#""a\u0041b""#, "aAb"),
    ] {
        let v = same_as_serde(text.as_bytes()).unwrap();
        assert_eq!(v, Value::String(expected.into()), "{text}");
    }
    // Borrowed from the input unless there are escapes.
    assert!(matches!(
        Reader::new(b"\"abc\"").string(),
        Ok(Cow::Borrowed("abc"))
    ));
    assert!(matches!(
        Reader::new(br#""a\nc""#).string(),
        Ok(Cow::Owned(s)) if s == "a\nc"
    ));
}

#[test]
fn strings_serde_json_refuses() {
    use ErrorKind::*;
    for (text, expected) in [
        (&br#""\uD800""#[..], UnexpectedEndOfHexEscape),
        (br#""\uD800x""#, UnexpectedEndOfHexEscape),
        (br#""\uD800\n""#, UnexpectedEndOfHexEscape),
        (br#""\uD800\u0041""#, LoneLeadingSurrogateInHexEscape),
        (br#""\uD800\uD800""#, LoneLeadingSurrogateInHexEscape),
        (br#""\uDC00""#, LoneLeadingSurrogateInHexEscape),
        (br#""\uD800\"#, EofWhileParsingString),
        (br#""\uD800\u12"#, EofWhileParsingString),
        (b"\"a\x01\"", ControlCharacterWhileParsingString),
        (b"\"\t\"", ControlCharacterWhileParsingString),
        (b"\"\n\"", ControlCharacterWhileParsingString),
        (br#""\x""#, InvalidEscape),
        (br#""\U0041""#, InvalidEscape),
        (br#""\u12G4""#, InvalidEscape),
        (br#""\u12""#, EofWhileParsingString),
        (br#""\u12"  ""#, InvalidEscape),
        (br#""\u1"#, EofWhileParsingString),
        (br#""\"#, EofWhileParsingString),
        (b"\"abc", EofWhileParsingString),
        (b"\"\xff\"", InvalidUnicodeCodePoint),
        (b"\"\xc0\x80\"", InvalidUnicodeCodePoint),
        (b"\"\xed\xa0\x80\"", InvalidUnicodeCodePoint),
        (b"\"\\n\xe2\x82\"", InvalidUnicodeCodePoint),
    ] {
        assert_eq!(kind(text), expected, "{}", String::from_utf8_lossy(text));
    }
}

#[test]
fn numbers_of_serde_jsons_three_kinds() {
    let float = |t: &str| Value::Number(Number::Float(t.into()));
    for (text, expected) in [
        ("0", Value::Number(Number::U64(0))),
        ("7", Value::Number(Number::U64(7))),
        ("18446744073709551615", Value::Number(Number::U64(u64::MAX))),
        ("18446744073709551616", float("18446744073709551616")),
        ("-1", Value::Number(Number::I64(-1))),
        ("-9223372036854775808", Value::Number(Number::I64(i64::MIN))),
        ("-9223372036854775809", float("-9223372036854775809")),
        ("-0", float("-0")),
        ("-0.0", float("-0.0")),
        ("1.5", float("1.5")),
        ("1e3", float("1e3")),
        ("1E+3", float("1E+3")),
        ("2.5e-3", float("2.5e-3")),
        ("0e0", float("0e0")),
        ("1.7976931348623157e308", float("1.7976931348623157e308")),
        // Rounds down to f64::MAX: still in range.
        ("1.7976931348623158e308", float("1.7976931348623158e308")),
        ("4.9e-324", float("4.9e-324")),
        ("1e-400", float("1e-400")),
        ("0e99999999999999999999", float("0e99999999999999999999")),
        (
            "-1e-99999999999999999999",
            float("-1e-99999999999999999999"),
        ),
        ("0.000000e400", float("0.000000e400")),
    ] {
        assert_eq!(same_as_serde(text.as_bytes()), Ok(expected), "{text}");
    }
    use ErrorKind::*;
    for (text, expected) in [
        ("1.7976931348623159e308", NumberOutOfRange),
        ("1e309", NumberOutOfRange),
        ("-1e309", NumberOutOfRange),
        ("1e99999999999999999999", NumberOutOfRange),
        ("0.001e312", NumberOutOfRange),
        ("01", InvalidNumber),
        ("-01", InvalidNumber),
        ("-", EofWhileParsingValue),
        ("-a", InvalidNumber),
        ("1.", EofWhileParsingValue),
        ("1.e1", InvalidNumber),
        ("1.5.", TrailingCharacters),
        (".5", ExpectedSomeValue),
        ("1e", EofWhileParsingValue),
        ("1e+", EofWhileParsingValue),
        ("1e+x", InvalidNumber),
        ("+1", ExpectedSomeValue),
        ("0x1", TrailingCharacters),
        ("NaN", ExpectedSomeValue),
        ("-Infinity", InvalidNumber),
    ] {
        assert_eq!(kind(text.as_bytes()), expected, "{text}");
    }
}

/// The boundary of `f64`'s range, to the last digit: [`F64_LIMIT`] and
/// anything above rounds to infinity, anything below does not.
#[test]
fn the_f64_range_ends_where_rounding_reaches_infinity() {
    let limit = std::str::from_utf8(F64_LIMIT).unwrap();
    let below = format!("{}1", &limit[..limit.len() - 1]);
    let with_point = |digits: &str, at: usize| format!("{}.{}", &digits[..at], &digits[at..]);
    for (text, finite) in [
        (limit.to_string(), false),
        (below.clone(), true),
        (format!("{limit}.0000"), false),
        (format!("{below}.99999"), true),
        (format!("{}e300", with_point(limit, 9)), false),
        (format!("{}e300", with_point(&below, 9)), true),
        (format!("0.{limit}e309"), false),
        (format!("0.000{below}e312"), true),
        (format!("{limit}e-1"), true),
        (format!("-{limit}"), false),
    ] {
        assert_eq!(text.parse::<f64>().unwrap().is_finite(), finite, "{text}");
        assert_eq!(same_as_serde(text.as_bytes()).is_ok(), finite, "{text}");
    }
}

#[test]
fn typed_numbers() {
    let u64_of = |t: &str| Reader::new(t.as_bytes()).u64().map_err(|e| e.to_string());
    assert_eq!(u64_of(" 18446744073709551615"), Ok(u64::MAX));
    for (text, error) in [
        (
            "-1",
            "invalid value: integer, expected u64 at line 1 column 1",
        ),
        ("1.0", "invalid type: floating point, expected u64"),
        ("1e3", "invalid type: floating point, expected u64"),
        (
            "18446744073709551616",
            "invalid type: floating point, expected u64",
        ),
        (
            "\"1\"",
            "invalid type: string, expected u64 at line 1 column 1",
        ),
        ("null", "invalid type: null, expected u64"),
        ("[]", "invalid type: sequence, expected u64"),
        ("01", "invalid number at line 1 column 2"),
        ("", "EOF while parsing a value at line 1 column 0"),
    ] {
        assert!(u64_of(text).unwrap_err().starts_with(error), "{text}");
    }
    let u32_of = |t: &str| Reader::new(t.as_bytes()).u32();
    assert_eq!(u32_of("4294967295"), Ok(u32::MAX));
    assert_eq!(
        u32_of("4294967296").unwrap_err().kind,
        ErrorKind::InvalidValue {
            found: Kind::Integer,
            expected: "u32"
        }
    );
    let i64_of = |t: &str| Reader::new(t.as_bytes()).i64();
    assert_eq!(i64_of("-9223372036854775808"), Ok(i64::MIN));
    assert_eq!(i64_of("9223372036854775807"), Ok(i64::MAX));
    assert!(i64_of("9223372036854775808").is_err());
    assert!(i64_of("-9223372036854775809").is_err());
    assert!(i64_of("-0").is_err());
    assert_eq!(Reader::new(b" true").bool(), Ok(true));
    assert_eq!(Reader::new(b"false").bool(), Ok(false));
    assert!(Reader::new(b"tru").bool().is_err());
    assert!(Reader::new(b"1").bool().is_err());
    let mut r = Reader::new(b"[null, 5]");
    r.array().unwrap();
    assert!(r.next_item().unwrap());
    assert_eq!(r.opt(Reader::u64), Ok(None));
    assert!(r.next_item().unwrap());
    assert_eq!(r.null(), Ok(false));
    assert_eq!(r.opt(Reader::u64), Ok(Some(5)));
    assert_eq!(r.next_item(), Ok(false));
    assert_eq!(r.end(), Ok(()));
}

#[test]
fn the_128th_level_of_nesting_is_refused_as_serde_json_refuses_it() {
    for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
        let nested = |depth: usize| format!("{}0{}", open.repeat(depth), close.repeat(depth));
        assert!(same_as_serde(nested(127).as_bytes()).is_ok());
        assert_eq!(
            kind(nested(128).as_bytes()),
            ErrorKind::RecursionLimitExceeded
        );
    }
    let mixed = r#"{"a":["#.repeat(64) + "1" + &"]}".repeat(64);
    assert_eq!(kind(mixed.as_bytes()), ErrorKind::RecursionLimitExceeded);
    // Deep input fails at the limit, without using the stack up.
    let deep = "[".repeat(1_000_000);
    assert_eq!(
        parse(deep.as_bytes()).unwrap_err().kind,
        ErrorKind::RecursionLimitExceeded
    );
    let mut r = Reader::new(deep.as_bytes());
    assert_eq!(
        r.raw_value().unwrap_err().kind,
        ErrorKind::RecursionLimitExceeded
    );
    // The levels a reader opens itself count too.
    let mut r = Reader::new(deep.as_bytes());
    for _ in 0..127 {
        r.array().unwrap();
        assert!(r.next_item().unwrap());
    }
    assert_eq!(
        r.array().unwrap_err().kind,
        ErrorKind::RecursionLimitExceeded
    );
}

/// A type read as a serde derive with `deny_unknown_fields` reads it.
fn point(text: &str) -> Result<(u64, Option<String>), Error> {
    const FIELDS: &[&str] = &["x", "name"];
    let mut r = Reader::new(text.as_bytes());
    let (mut x, mut name) = (None, None);
    r.object()?;
    while let Some(key) = r.next_key()? {
        match &*key {
            "x" => r.once(&mut x, "x", Reader::u64)?,
            "name" => r.once(&mut name, "name", |r| r.opt(Reader::owned_string))?,
            other => return Err(r.unknown_field(other, FIELDS)),
        }
    }
    let point = (r.required(x, "x")?, name.flatten());
    r.end()?;
    Ok(point)
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SerdePoint {
    x: u64,
    name: Option<String>,
}

#[test]
fn fields_given_twice_missing_or_unknown_are_refused_as_serde_refuses_them() {
    assert_eq!(point(r#"{"name":null,"x":1}"#), Ok((1, None)));
    assert_eq!(
        point(r#" { "x" : 2 , "name" : "n" } "#),
        Ok((2, Some("n".into())))
    );
    for (text, message) in [
        (r#"{"x":1,"x":2}"#, "duplicate field `x`"),
        (
            r#"{"name":null,"x":1,"name":"a"}"#,
            "duplicate field `name`",
        ),
        (r#"{"name":"a"}"#, "missing field `x`"),
        (r#"{}"#, "missing field `x`"),
        (
            r#"{"x":1,"y":2}"#,
            "unknown field `y`, expected `x` or `name`",
        ),
        (r#"{"x":-1}"#, "invalid value: integer"),
        (r#"{"x":"1"}"#, "invalid type: string"),
        ("1", "invalid type: integer"),
        (r#"{"x":1} {}"#, "trailing characters"),
    ] {
        let ours = point(text).unwrap_err().to_string();
        let theirs = serde_json::from_str::<SerdePoint>(text)
            .unwrap_err()
            .to_string();
        assert!(ours.starts_with(message), "{text}: {ours}");
        assert!(theirs.starts_with(message), "{text}: {theirs}");
    }
    let unknown = |expected| {
        ErrorKind::UnknownField {
            field: "f".into(),
            expected,
        }
        .to_string()
    };
    assert_eq!(unknown(&[]), "unknown field `f`, there are no fields");
    assert_eq!(unknown(&["a"]), "unknown field `f`, expected `a`");
    assert_eq!(
        unknown(&["a", "b", "c"]),
        "unknown field `f`, expected one of `a`, `b`, `c`"
    );
}

#[test]
fn raw_values_are_the_exact_bytes() {
    for text in [
        r#"{"a" : [1, 2 ,{}], "b":"\u00e9"}"#,
        "[ ]",
        r#""\ud83d\ude00""#,
        "-1.5E+3",
        "null",
        "[[[true]],false]",
    ] {
        let padded = format!(" \n\t{text}\r\n ");
        let mut r = Reader::new(padded.as_bytes());
        let raw = r.raw_value().unwrap();
        assert_eq!(r.end(), Ok(()));
        let theirs: Box<RawValue> = serde_json::from_str(&padded).unwrap();
        assert_eq!(raw, theirs.get().as_bytes());
        assert_eq!(raw, text.as_bytes());
    }
    // A member's value, inside an object.
    let mut r = Reader::new(br#"{"a": {"b" : [1]} , "c":2}"#);
    r.object().unwrap();
    assert_eq!(r.next_key().unwrap().as_deref(), Some("a"));
    assert_eq!(r.raw_value().unwrap(), br#"{"b" : [1]}"#);
    assert_eq!(r.next_key().unwrap().as_deref(), Some("c"));
    assert_eq!(r.raw_value().unwrap(), b"2");
    assert_eq!(r.next_key().unwrap(), None);
    for bad in ["", "[1,]", "{\"a\"}", "tru", "\"\\x\""] {
        assert!(Reader::new(bad.as_bytes()).raw_value().is_err(), "{bad}");
    }
}

/// Syntax errors as serde_json reports them, position included.
#[test]
fn syntax_errors_say_what_and_where_as_serde_json_does() {
    for text in [
        "",
        "   ",
        "[1,",
        "[1",
        "[",
        "{",
        r#"{"a""#,
        r#"{"a":"#,
        r#"{"a":1"#,
        "{\n  \"a\": tru\n}",
        "{\n  \"a\": 1,\n  \"b\" 2\n}",
        "[1 2]",
        r#"{"a":1 "b":2}"#,
        "[1,]",
        r#"{"a":1,}"#,
        r#"{"a":1,"#,
        "1 2",
        "{}\n\n  x",
        "{1:2}",
        r#"{"a":1,2:3}"#,
        "nul",
        "nulx",
        "x",
        "01",
        "[-]",
        "\"abc",
        "\"a\\qb\"",
        "\"a\u{1}\"",
    ] {
        let ours = parse(text.as_bytes()).unwrap_err();
        let theirs = serde_json::from_str::<serde_json::Value>(text).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string(), "{text:?}");
        assert_eq!(
            (ours.line(), ours.column()),
            (theirs.line(), theirs.column())
        );
    }
    // Bytes that are not UTF-8, and errors found after reading on: at the
    // first bad byte, the last hex digit, the number's end.
    for bytes in [
        &b"\"e\xffror\""[..],
        b"[\"ab\xc3\"]",
        b"\n \"\xe2\x82\xac\xe2\x82\"",
        b"[\"\\u12x4\"]",
        b"\"\\uD800\\uD800\"",
        b"\"\\uDC00\"",
        b"{\"a\":\"\\uD800x\"}",
        b"[1.5e999]",
        b"-1e400 ",
        b"[\"\xff\x01\"]",
    ] {
        let ours = parse(bytes).unwrap_err();
        let theirs = serde_json::from_slice::<serde_json::Value>(bytes).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string(), "{bytes:?}");
    }
}

#[test]
fn errors_quote_no_value() {
    let secret = r#"{"x":"hunter2-secret"}"#;
    let e = point(secret).unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let e = Reader::new(br#""hunter2""#).u64().unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let e = Reader::new(b"31337.5").u64().unwrap_err().to_string();
    assert!(!e.contains("31337"), "{e}");
    let e = Reader::new(b"[31337]").object().unwrap_err().to_string();
    assert!(!e.contains("31337"), "{e}");
}

#[test]
fn values_are_serde_jsons() {
    for text in [
        r#"{"b":1,"a":[true,false,null,"s",-2,2.5],"c":{"z":{},"y":[]}}"#,
        r#"{"k":1,"k":2,"j":0,"k":3}"#,
        r#"[{"a":1,"a":{"b":1}},{"a":[1],"a":null}]"#,
        r#"{"é":1,"e":2,"\u0000":3,"":4}"#,
        " [ 1 , 2 ] ",
        "\"x\"",
        "{}",
    ] {
        same_as_serde(text.as_bytes()).unwrap();
    }
    let v = parse(br#"{"k":1,"b":[2],"k":3,"a":null}"#).unwrap();
    let map = v.as_object().unwrap();
    // Sorted by name, the last of a name kept, as in serde_json's map.
    assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "k"]);
    assert_eq!(v.get("k").and_then(Value::as_u64), Some(3));
    assert!(v.get("a").is_some_and(Value::is_null));
    assert_eq!(v.get("b").and_then(Value::as_array).map(Vec::len), Some(1));
    assert_eq!(v.get("z"), None);
    assert_eq!(Value::Null.get("k"), None);
    let mut map = map.clone();
    assert_eq!(map.remove("b").map(|b| b.to_string()), Some("[2]".into()));
    assert_eq!(map.remove("b"), None);
    assert_eq!(map.len(), 2);
    // Written back as serde_json writes the same tree.
    let text = r#"{"b":[1,-2,"\u0001é\"",null],"a":{"y":true,"x":false},"c":18446744073709551615}"#;
    let ours = parse(text.as_bytes()).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(ours.to_string(), theirs.to_string());
    // A fraction as it was written.
    assert_eq!(
        parse(b"[1.50, -0, 1E2]").unwrap().to_string(),
        "[1.50,-0,1E2]"
    );
}

#[test]
fn strings_are_written_as_serde_json_escapes_them() {
    let all: String = (0u8..=0x7f).map(char::from).collect();
    for s in [
        all.as_str(),
        "",
        "plain",
        "a\"b\\c",
        "\u{7f}\u{1f}",
        "é€😀\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}",
        "\u{2028}\u{2029}\u{feff}",
    ] {
        let ours = Object::new().string("k\"\n", s).finish();
        let theirs = serde_json::to_vec(&serde_json::json!({ "k\"\n": s })).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
        let value = Value::String(s.into()).to_string();
        assert_eq!(value, serde_json::Value::from(s).to_string());
    }
    for c in (0..=0x7f).map(char::from) {
        let s = c.to_string();
        let ours = Object::new().string("k", &s).finish();
        let theirs = serde_json::to_vec(&serde_json::json!({ "k": s })).unwrap();
        assert_eq!(ours, theirs, "{c:?}");
    }
    let mut o = Object::default();
    o.u64("a", u64::MAX)
        .opt_u64("b", None)
        .opt_u64("c", Some(0))
        .opt_string("d", None)
        .opt_string("e", Some("x"))
        .bool("f", true)
        .bool("g", false)
        .raw("h", b"[1,{}]");
    assert_eq!(
        String::from_utf8(o.finish()).unwrap(),
        r#"{"a":18446744073709551615,"b":null,"c":0,"d":null,"e":"x","f":true,"g":false,"h":[1,{}]}"#
    );
    assert_eq!(Object::new().finish(), b"{}");
}
