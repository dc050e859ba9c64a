//! JSON written as serde_json writes it: compact, strings escaped alike.

use super::{Map, Value};

/// Writes one JSON object, compact, members in the order written: the
/// bytes `serde_json::to_vec` gives for a struct with these fields.
pub struct Object(Vec<u8>);

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

impl Object {
    pub fn new() -> Object {
        Object(vec![b'{'])
    }

    fn name(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        escape(&mut self.0, name);
        self.0.push(b':');
    }

    pub fn string(&mut self, name: &str, value: &str) -> &mut Object {
        self.name(name);
        escape(&mut self.0, value);
        self
    }

    /// `null` for `None`.
    pub fn opt_string(&mut self, name: &str, value: Option<&str>) -> &mut Object {
        match value {
            Some(v) => self.string(name, v),
            None => self.raw(name, b"null"),
        }
    }

    pub fn u64(&mut self, name: &str, value: u64) -> &mut Object {
        self.name(name);
        self.0.extend_from_slice(value.to_string().as_bytes());
        self
    }

    /// `null` for `None`.
    pub fn opt_u64(&mut self, name: &str, value: Option<u64>) -> &mut Object {
        match value {
            Some(v) => self.u64(name, v),
            None => self.raw(name, b"null"),
        }
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut Object {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.raw(name, text)
    }

    /// A member whose value is already JSON.
    pub fn raw(&mut self, name: &str, json: &[u8]) -> &mut Object {
        self.name(name);
        self.0.extend_from_slice(json);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.push(b'}');
        out
    }
}

/// A JSON string, escaped as serde_json escapes it: `"`, `\\` and the
/// control characters, with the short forms where JSON has them.
pub(super) fn escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                continue;
            }
            _ => {
                out.push(b);
                continue;
            }
        };
        out.push(b'\\');
        out.push(short);
    }
    out.push(b'"');
}

/// `v` as compact JSON, members in their (name) order.
pub(super) fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => escape(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => object(out, map),
    }
}

fn object(out: &mut Vec<u8>, map: &Map) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        escape(out, k);
        out.push(b':');
        value(out, v);
    }
    out.push(b'}');
}
