//! A parsed JSON document, for the readers that look at a few fields of
//! whatever a server or an operator sent (token answers, error bodies,
//! the plugin JSON) rather than at one fixed type. It is serde_json's
//! `Value` as far as those readers used it: an object's members are
//! sorted by name and a name given twice keeps its last value.

use super::{Error, ErrorKind, Reader, Scanned};
use std::fmt;

/// A JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Map),
}

/// A JSON number, of serde_json's three kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Number {
    U64(u64),
    /// Negative only.
    I64(i64),
    /// Any other number (a fraction, an exponent, `-0`, an integer
    /// beyond 64 bits), as written: in range of an `f64`, but not
    /// converted to one (nothing here computes with one, and the
    /// conversion is much code).
    Float(String),
}

impl Number {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Number::U64(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::U64(n) => write!(f, "{n}"),
            Number::I64(n) => write!(f, "{n}"),
            Number::Float(text) => f.write_str(text),
        }
    }
}

/// An object's members, sorted by name, each name once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Map(Vec<(String, Value)>);

impl Map {
    pub fn new() -> Map {
        Map(Vec::new())
    }

    /// Members in any order, a later one replacing an earlier of the same
    /// name (serde_json's map keeps the last).
    fn from_members(members: Vec<(String, Value)>) -> Map {
        if members.len() < 2 {
            return Map(members);
        }
        let numbered: Vec<(usize, (String, Value))> = members.into_iter().enumerate().collect();
        let mut sorted = crate::sort::sorted(numbered, &|(i, (a, _)), (j, (b, _))| {
            a.cmp(b).then(i.cmp(j))
        });
        // Of equal names, the last in the input is the last here: it
        // takes the place of the one kept.
        sorted.dedup_by(|later, kept| {
            let same = later.1 .0 == kept.1 .0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        Map(sorted.into_iter().map(|(_, member)| member).collect())
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = self.position(key).ok()?;
        self.0.get(i).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key).ok()?;
        Some(self.0.remove(i).1)
    }

    /// In name order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Value::String(_))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    /// An object's member; `None` for a value that is no object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|m| m.get(key))
    }
}

/// Compact JSON, as serde_json writes a `Value` (a fraction as it was
/// read: serde_json would write its shortest form).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        super::write::value(&mut out, self);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// The one document in `bytes` (white space around it allowed).
pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
    let mut r = Reader::new(bytes);
    let value = r.value()?;
    r.end()?;
    Ok(value)
}

impl Reader<'_> {
    /// The next value, whole.
    pub fn value(&mut self) -> Result<Value, Error> {
        Ok(match self.peek() {
            None => return Err(self.error(ErrorKind::EofWhileParsingValue)),
            Some(b'n') => {
                self.ident(b"null")?;
                Value::Null
            }
            Some(b't' | b'f') => Value::Bool(self.bool()?),
            Some(b'"') => Value::String(self.string_here()?.into_owned()),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                Value::Number(match self.number()? {
                    Scanned::U64(n) => Number::U64(n),
                    Scanned::I64(n) => Number::I64(n),
                    Scanned::Float => Number::Float(
                        String::from_utf8_lossy(
                            self.bytes.get(start..self.pos).unwrap_or_default(),
                        )
                        .into_owned(),
                    ),
                })
            }
            Some(b'[') => {
                self.open()?;
                let mut items = Vec::new();
                while self.next_item()? {
                    items.push(self.value()?);
                }
                Value::Array(items)
            }
            Some(b'{') => {
                self.open()?;
                let mut members = Vec::new();
                while let Some(key) = self.next_key()? {
                    let value = self.value()?;
                    members.push((key.into_owned(), value));
                }
                Value::Object(Map::from_members(members))
            }
            Some(_) => return Err(self.error(ErrorKind::ExpectedSomeValue)),
        })
    }
}
