//! JSON without serde: a pull [`Reader`] over bytes, a small [`Value`]
//! tree ([`parse`]) and an [`Object`] writer.
//!
//! serde's derives and serde_json's visitors compile to code for every
//! type they read or write, which was a large part of the wasm module;
//! here one reader serves every type, and each type's fields are a
//! `match` on their names. What is read and written stays what serde_json
//! read and wrote:
//! - the reader accepts exactly the documents serde_json accepts (UTF-8,
//!   escapes and surrogate pairs, numbers, the nesting limit), which the
//!   fuzz target `json` checks against serde_json itself;
//! - typed reads keep the rules of serde's derives: a field given twice is
//!   refused ([`Reader::once`]), a missing one is named
//!   ([`Reader::required`]), unknown ones are refused or skipped as the
//!   type says;
//! - [`Object`] writes the bytes `serde_json::to_vec` wrote for the
//!   structs it replaced (the modules' tests compare them).
//!
//! Errors carry the line and column, and wording close to serde_json's,
//! but never a value from the input: not the string or the number that
//! did not fit (serde_json quotes them). A config may be secret, and an
//! error is logged. Field names are named.

mod error;
mod value;
mod write;

pub use error::{Error, ErrorKind, Kind};
pub use value::{parse, Map, Number, Value};
pub use write::Object;

use std::borrow::Cow;

/// How deeply arrays and objects may nest: the 128th level is refused,
/// as serde_json refuses it, so that no input can exhaust the stack of
/// the readers that recurse ([`Reader::skip`], [`Reader::value`]).
const MAX_DEPTH: u8 = 127;

/// The smallest number that rounds to infinity as an `f64` (`2^1024 -
/// 2^970`, halfway between `f64::MAX` and `2^1024`), in decimal: a
/// number at least this large is out of range, as serde_json says.
const F64_LIMIT: &[u8] = b"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";

/// A number as read: an integer that fits, or another number (its text
/// is `start..end` of the input, checked to be in `f64`'s range).
enum Scanned {
    U64(u64),
    /// Negative only.
    I64(i64),
    Float,
}

/// Reads one JSON document from the front, value by value.
///
/// Objects are read member by member: [`Reader::object`], then
/// [`Reader::next_key`] until it gives `None`, reading (or skipping) each
/// member's value in between; arrays likewise with [`Reader::array`] and
/// [`Reader::next_item`]. [`Reader::end`] checks that nothing follows.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Arrays and objects open around `pos`.
    depth: u8,
    /// An array or object was just opened: its first member needs no
    /// comma before it.
    opened: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            depth: 0,
            opened: false,
        }
    }

    /// The error `kind`, at the byte at `pos` (the end, past the input).
    fn error(&self, kind: ErrorKind) -> Error {
        let at = self.pos.saturating_add(1).min(self.bytes.len());
        let before = self.bytes.get(..at).unwrap_or(self.bytes);
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Error {
            kind,
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            column: at - line_start,
        }
    }

    /// The next byte after white space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn byte(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The error for a value that is not what `expected` names (or no
    /// value at all).
    fn unexpected(&mut self, expected: &'static str) -> Error {
        let found = match self.peek() {
            None => return self.error(ErrorKind::EofWhileParsingValue),
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Boolean,
            Some(b'"') => Kind::String,
            Some(b'[') => Kind::Array,
            Some(b'{') => Kind::Object,
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                let found = match self.number() {
                    Err(e) => return e,
                    Ok(Scanned::Float) => Kind::Float,
                    Ok(_) => Kind::Integer,
                };
                self.pos = start;
                found
            }
            Some(_) => return self.error(ErrorKind::ExpectedSomeValue),
        };
        self.error(ErrorKind::InvalidType { found, expected })
    }

    /// Consumes the `[` or `{` at `pos`.
    fn open(&mut self) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(ErrorKind::RecursionLimitExceeded));
        }
        self.depth += 1;
        self.pos += 1;
        self.opened = true;
        Ok(())
    }

    /// Consumes the `]` or `}` at `pos`.
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.pos += 1;
    }

    /// Opens an object: its members follow through [`Reader::next_key`].
    pub fn object(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some(b'{') => self.open(),
            _ => Err(self.unexpected("a map")),
        }
    }

    /// The next member's name (its value is to be read next), or `None`
    /// at the end of the object.
    pub fn next_key(&mut self) -> Result<Option<Cow<'a, str>>, Error> {
        let first = std::mem::take(&mut self.opened);
        match self.peek() {
            Some(b'}') => {
                self.close();
                return Ok(None);
            }
            Some(b',') if !first => {
                self.pos += 1;
                match self.peek() {
                    Some(b'"') => {}
                    Some(b'}') => return Err(self.error(ErrorKind::TrailingComma)),
                    Some(_) => return Err(self.error(ErrorKind::KeyMustBeAString)),
                    None => return Err(self.error(ErrorKind::EofWhileParsingValue)),
                }
            }
            Some(b'"') if first => {}
            Some(_) if first => return Err(self.error(ErrorKind::KeyMustBeAString)),
            Some(_) => return Err(self.error(ErrorKind::ExpectedObjectCommaOrEnd)),
            None => return Err(self.error(ErrorKind::EofWhileParsingObject)),
        }
        let key = self.string_here()?;
        match self.peek() {
            Some(b':') => self.pos += 1,
            Some(_) => return Err(self.error(ErrorKind::ExpectedColon)),
            None => return Err(self.error(ErrorKind::EofWhileParsingObject)),
        }
        Ok(Some(key))
    }

    /// Opens an array: its items follow through [`Reader::next_item`].
    pub fn array(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some(b'[') => self.open(),
            _ => Err(self.unexpected("a sequence")),
        }
    }

    /// Whether another item follows (to be read next); `false` at the
    /// end of the array.
    pub fn next_item(&mut self) -> Result<bool, Error> {
        let first = std::mem::take(&mut self.opened);
        match self.peek() {
            Some(b']') => {
                self.close();
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                match self.peek() {
                    Some(b']') => Err(self.error(ErrorKind::TrailingComma)),
                    Some(_) => Ok(true),
                    None => Err(self.error(ErrorKind::EofWhileParsingValue)),
                }
            }
            Some(_) if first => Ok(true),
            Some(_) => Err(self.error(ErrorKind::ExpectedListCommaOrEnd)),
            None => Err(self.error(ErrorKind::EofWhileParsingList)),
        }
    }

    /// A string, borrowed from the input unless it has escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        match self.peek() {
            Some(b'"') => self.string_here(),
            _ => Err(self.unexpected("a string")),
        }
    }

    /// A string, owned.
    pub fn owned_string(&mut self) -> Result<String, Error> {
        self.string().map(Cow::into_owned)
    }

    /// The string whose opening quote is at `pos`.
    fn string_here(&mut self) -> Result<Cow<'a, str>, Error> {
        self.pos += 1;
        let start = self.pos;
        // The bytes from `run` on are not yet copied into `unescaped`.
        let mut run = start;
        let mut unescaped: Option<Vec<u8>> = None;
        loop {
            // Up to the next byte that is not plain text, in one pass.
            let rest = self.bytes.get(self.pos..).unwrap_or_default();
            self.pos += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            match self.byte() {
                None => return Err(self.error(ErrorKind::EofWhileParsingString)),
                Some(b'"') => break,
                Some(b'\\') => {
                    let out = unescaped.get_or_insert_with(Vec::new);
                    out.extend_from_slice(self.bytes.get(run..self.pos).unwrap_or_default());
                    self.pos += 1;
                    self.escape(out)?;
                    run = self.pos;
                }
                Some(_) => return Err(self.error(ErrorKind::ControlCharacterWhileParsingString)),
            }
        }
        // Checked whole, escapes and all (they are ASCII), once the string
        // ended, and refused at the first byte that is not UTF-8: the
        // error serde_json gives.
        let not_utf8 = |r: &mut Self, at: usize| {
            r.pos = at;
            r.error(ErrorKind::InvalidUnicodeCodePoint)
        };
        let raw = self.bytes.get(start..self.pos).unwrap_or_default();
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            Err(e) => return Err(not_utf8(self, start + e.valid_up_to())),
        };
        let tail = self.bytes.get(run..self.pos).unwrap_or_default();
        self.pos += 1;
        match unescaped {
            None => Ok(Cow::Borrowed(text)),
            Some(mut out) => {
                out.extend_from_slice(tail);
                String::from_utf8(out)
                    .map(Cow::Owned)
                    .map_err(|_| not_utf8(self, start))
            }
        }
    }

    /// The escape after a `\` (`pos` is past the `\`), appended to `out`.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let short = match self.byte() {
            None => return Err(self.error(ErrorKind::EofWhileParsingString)),
            Some(b'u') => {
                self.pos += 1;
                return self.unicode_escape(out);
            }
            Some(c @ (b'"' | b'\\' | b'/')) => c,
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(_) => return Err(self.error(ErrorKind::InvalidEscape)),
        };
        self.pos += 1;
        out.push(short);
        Ok(())
    }

    /// The escape after `\u`: a character, or a surrogate pair (as
    /// serde_json reads strings, a lone surrogate is refused).
    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let first = self.hex4()?;
        // Surrogate errors are at the last digit read, as serde_json's.
        let lone = |r: &mut Self| {
            r.pos -= 1;
            r.error(ErrorKind::LoneLeadingSurrogateInHexEscape)
        };
        let code = match first {
            0xdc00..=0xdfff => return Err(lone(self)),
            0xd800..=0xdbff => {
                for expected in [b'\\', b'u'] {
                    match self.byte() {
                        Some(b) if b == expected => self.pos += 1,
                        Some(_) => return Err(self.error(ErrorKind::UnexpectedEndOfHexEscape)),
                        None => return Err(self.error(ErrorKind::EofWhileParsingString)),
                    }
                }
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(lone(self));
                }
                0x1_0000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            n => n,
        };
        let c = char::from_u32(code).ok_or_else(|| self.error(ErrorKind::InvalidEscape))?;
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    /// Four hex digits.
    fn hex4(&mut self) -> Result<u32, Error> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            self.pos = self.bytes.len();
            return Err(self.error(ErrorKind::EofWhileParsingString));
        };
        let mut n = 0;
        for &d in digits {
            let Some(v) = char::from(d).to_digit(16) else {
                // At the last of the four, as serde_json reports it.
                self.pos += 3;
                return Err(self.error(ErrorKind::InvalidEscape));
            };
            n = n << 4 | v;
        }
        self.pos += 4;
        Ok(n)
    }

    /// The literal `word` (`null`, `true`, `false`), whose first byte is
    /// at `pos`.
    fn ident(&mut self, word: &[u8]) -> Result<(), Error> {
        for &expected in word {
            match self.byte() {
                Some(b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.error(ErrorKind::ExpectedSomeIdent)),
                None => return Err(self.error(ErrorKind::EofWhileParsingValue)),
            }
        }
        Ok(())
    }

    /// Consumes a `null` if one comes next.
    pub fn null(&mut self) -> Result<bool, Error> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.ident(b"null").map(|()| true)
    }

    /// `read`, or `None` for `null`.
    pub fn opt<T>(&mut self, read: fn(&mut Self) -> Result<T, Error>) -> Result<Option<T>, Error> {
        match self.null()? {
            true => Ok(None),
            false => read(self).map(Some),
        }
    }

    pub fn bool(&mut self) -> Result<bool, Error> {
        match self.peek() {
            Some(b't') => self.ident(b"true").map(|()| true),
            Some(b'f') => self.ident(b"false").map(|()| false),
            _ => Err(self.unexpected("a boolean")),
        }
    }

    pub fn u64(&mut self) -> Result<u64, Error> {
        self.unsigned("u64")
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        self.peek();
        let start = self.pos;
        let n = self.unsigned("u32")?;
        u32::try_from(n).map_err(|_| {
            self.pos = start;
            self.error(ErrorKind::InvalidValue {
                found: Kind::Integer,
                expected: "u32",
            })
        })
    }

    /// A non-negative integer, named `expected` in errors.
    fn unsigned(&mut self, expected: &'static str) -> Result<u64, Error> {
        let Some(b'-' | b'0'..=b'9') = self.peek() else {
            return Err(self.unexpected(expected));
        };
        let start = self.pos;
        let found = match self.number()? {
            Scanned::U64(n) => return Ok(n),
            Scanned::I64(_) => ErrorKind::InvalidValue {
                found: Kind::Integer,
                expected,
            },
            Scanned::Float => ErrorKind::InvalidType {
                found: Kind::Float,
                expected,
            },
        };
        self.pos = start;
        Err(self.error(found))
    }

    pub fn i64(&mut self) -> Result<i64, Error> {
        let Some(b'-' | b'0'..=b'9') = self.peek() else {
            return Err(self.unexpected("i64"));
        };
        let start = self.pos;
        let found = match self.number()? {
            Scanned::I64(n) => return Ok(n),
            Scanned::U64(n) => match i64::try_from(n) {
                Ok(n) => return Ok(n),
                Err(_) => Kind::Integer,
            },
            Scanned::Float => Kind::Float,
        };
        self.pos = start;
        Err(self.error(match found {
            Kind::Integer => ErrorKind::InvalidValue {
                found,
                expected: "i64",
            },
            _ => ErrorKind::InvalidType {
                found,
                expected: "i64",
            },
        }))
    }

    /// The number at `pos`, by serde_json's rules: an integer that fits
    /// a `u64` (or, negative, an `i64`) is one; anything else (a
    /// fraction, an exponent, `-0`, a larger integer) is an `f64`, and
    /// refused when too large for one.
    fn number(&mut self) -> Result<Scanned, Error> {
        let negative = self.byte() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.byte() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.byte() {
                    return Err(self.error(ErrorKind::InvalidNumber));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            Some(_) => return Err(self.error(ErrorKind::InvalidNumber)),
            None => return Err(self.error(ErrorKind::EofWhileParsingValue)),
        }
        let int_end = self.pos;
        let mut frac = int_end..int_end;
        let mut float = false;
        if self.byte() == Some(b'.') {
            self.pos += 1;
            frac.start = self.pos;
            self.digits();
            frac.end = self.pos;
            if frac.is_empty() {
                return Err(self.digit_expected());
            }
            float = true;
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = self.byte() {
            self.pos += 1;
            let negative_exp = self.byte() == Some(b'-');
            if let Some(b'+' | b'-') = self.byte() {
                self.pos += 1;
            }
            let exp_start = self.pos;
            self.digits();
            if self.pos == exp_start {
                return Err(self.digit_expected());
            }
            for &d in self.bytes.get(exp_start..self.pos).unwrap_or_default() {
                // Saturated far beyond any exponent that changes the answer.
                exp = (exp * 10 + i64::from(d - b'0')).min(1 << 40);
            }
            if negative_exp {
                exp = -exp;
            }
            float = true;
        }
        let int = self.bytes.get(int_start..int_end).unwrap_or_default();
        if !float {
            let n = int.iter().try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            match (n, negative) {
                (Some(n), false) => return Ok(Scanned::U64(n)),
                (Some(n), true) if n != 0 => {
                    if let Some(n) = 0i64.checked_sub_unsigned(n) {
                        return Ok(Scanned::I64(n));
                    }
                }
                _ => {}
            }
        }
        let frac = self.bytes.get(frac).unwrap_or_default();
        if !in_f64_range(int, frac, exp) {
            // At the number's last byte.
            self.pos -= 1;
            return Err(self.error(ErrorKind::NumberOutOfRange));
        }
        Ok(Scanned::Float)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.byte() {
            self.pos += 1;
        }
    }

    /// A `.` or an exponent without a digit after it.
    fn digit_expected(&self) -> Error {
        match self.byte() {
            Some(_) => self.error(ErrorKind::InvalidNumber),
            None => self.error(ErrorKind::EofWhileParsingValue),
        }
    }

    /// Skips one value of any kind, checking it as [`Reader::value`] does
    /// (serde_json checked less of a value it skipped: neither its depth
    /// nor its strings' surrogates; no config needs either).
    pub fn skip(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some(b'{') => {
                self.open()?;
                while self.next_key()?.is_some() {
                    self.skip()?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.open()?;
                while self.next_item()? {
                    self.skip()?;
                }
                Ok(())
            }
            Some(b'"') => self.string_here().map(drop),
            Some(b'n') => self.ident(b"null"),
            Some(b't') => self.ident(b"true"),
            Some(b'f') => self.ident(b"false"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(_) => Err(self.error(ErrorKind::ExpectedSomeValue)),
            None => Err(self.error(ErrorKind::EofWhileParsingValue)),
        }
    }

    /// The exact bytes of the next value (without the white space around
    /// it), checked as [`Reader::skip`] checks them: what serde_json's
    /// `RawValue` held.
    pub fn raw_value(&mut self) -> Result<&'a [u8], Error> {
        self.peek();
        let start = self.pos;
        self.skip()?;
        Ok(self.bytes.get(start..self.pos).unwrap_or_default())
    }

    /// Only white space is left.
    pub fn end(&mut self) -> Result<(), Error> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error(ErrorKind::TrailingCharacters)),
        }
    }

    /// Reads a field's value into `slot` with `read`, unless the field
    /// was given before: serde's derives refuse a duplicate field, so no
    /// two readers of one document can see different values.
    pub fn once<T>(
        &mut self,
        slot: &mut Option<T>,
        name: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<(), Error> {
        if slot.is_some() {
            return Err(self.error(ErrorKind::DuplicateField(name)));
        }
        *slot = Some(read(self)?);
        Ok(())
    }

    /// The value of a field that must be given.
    pub fn required<T>(&self, slot: Option<T>, name: &'static str) -> Result<T, Error> {
        slot.ok_or_else(|| self.error(ErrorKind::MissingField(name)))
    }

    /// The error for a field not among `expected`, for types that refuse
    /// unknown fields (serde's `deny_unknown_fields`).
    pub fn unknown_field(&self, field: &str, expected: &'static [&'static str]) -> Error {
        self.error(ErrorKind::UnknownField {
            field: field.to_string(),
            expected,
        })
    }
}

/// Whether `int.frac` × 10^`exp` (`int` without leading zeros but a lone
/// `0`) rounds to a finite `f64`, i.e. is below [`F64_LIMIT`].
fn in_f64_range(int: &[u8], frac: &[u8], exp: i64) -> bool {
    let digits = int.iter().chain(frac);
    let zeros = digits.clone().take_while(|&&d| d == b'0').count();
    if zeros == int.len() + frac.len() {
        return true;
    }
    // The value is 0.<significant digits> × 10^magnitude.
    let magnitude = int.len() as i64 - zeros as i64 + exp;
    let limit_magnitude = F64_LIMIT.len() as i64;
    if magnitude != limit_magnitude {
        return magnitude < limit_magnitude;
    }
    let mut significant = digits.skip(zeros);
    for &limit in F64_LIMIT {
        let d = significant.next().copied().unwrap_or(b'0');
        if d != limit {
            return d < limit;
        }
    }
    false
}

#[cfg(test)]
mod tests;
