//! Why the reader refused a document: serde_json's errors (its words,
//! where it found them), and those of typed reads. None holds a value of
//! the document; an unknown field's name is the only text taken from it.

use std::fmt;

/// Why a document was refused, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub(super) kind: ErrorKind,
    pub(super) line: usize,
    pub(super) column: usize,
}

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// 1-based.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The byte on [`Error::line`] where the error was found, 1-based (0:
    /// at the start of an empty line, or of an empty document).
    pub fn column(&self) -> usize {
        self.column
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.kind, self.line, self.column
        )
    }
}

impl std::error::Error for Error {}

/// What is wrong: serde_json's syntax errors, then those of a typed read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    EofWhileParsingValue,
    EofWhileParsingString,
    EofWhileParsingList,
    EofWhileParsingObject,
    ExpectedColon,
    ExpectedListCommaOrEnd,
    ExpectedObjectCommaOrEnd,
    /// `null`, `true` or `false` misspelt.
    ExpectedSomeIdent,
    ExpectedSomeValue,
    KeyMustBeAString,
    TrailingComma,
    /// Something other than white space after the document.
    TrailingCharacters,
    InvalidEscape,
    InvalidNumber,
    /// A number too large for an `f64`.
    NumberOutOfRange,
    /// A string that is not UTF-8.
    InvalidUnicodeCodePoint,
    ControlCharacterWhileParsingString,
    /// A `\u` escape of half a surrogate pair without the other half.
    LoneLeadingSurrogateInHexEscape,
    UnexpectedEndOfHexEscape,
    /// Arrays and objects nested deeper than serde_json allows.
    RecursionLimitExceeded,
    /// A value of another kind than the one expected.
    InvalidType {
        found: Kind,
        expected: &'static str,
    },
    /// A value of the expected kind that does not fit (a negative or too
    /// large integer).
    InvalidValue {
        found: Kind,
        expected: &'static str,
    },
    MissingField(&'static str),
    DuplicateField(&'static str),
    /// A field the type does not have (the name is the input's).
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        let text = match self {
            EofWhileParsingValue => "EOF while parsing a value",
            EofWhileParsingString => "EOF while parsing a string",
            EofWhileParsingList => "EOF while parsing a list",
            EofWhileParsingObject => "EOF while parsing an object",
            ExpectedColon => "expected `:`",
            ExpectedListCommaOrEnd => "expected `,` or `]`",
            ExpectedObjectCommaOrEnd => "expected `,` or `}`",
            ExpectedSomeIdent => "expected ident",
            ExpectedSomeValue => "expected value",
            KeyMustBeAString => "key must be a string",
            TrailingComma => "trailing comma",
            TrailingCharacters => "trailing characters",
            InvalidEscape => "invalid escape",
            InvalidNumber => "invalid number",
            NumberOutOfRange => "number out of range",
            InvalidUnicodeCodePoint => "invalid unicode code point",
            ControlCharacterWhileParsingString => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            LoneLeadingSurrogateInHexEscape => "lone leading surrogate in hex escape",
            UnexpectedEndOfHexEscape => "unexpected end of hex escape",
            RecursionLimitExceeded => "recursion limit exceeded",
            InvalidType { found, expected } => {
                return write!(f, "invalid type: {found}, expected {expected}")
            }
            InvalidValue { found, expected } => {
                return write!(f, "invalid value: {found}, expected {expected}")
            }
            MissingField(name) => return write!(f, "missing field `{name}`"),
            DuplicateField(name) => return write!(f, "duplicate field `{name}`"),
            UnknownField { field, expected } => {
                write!(f, "unknown field `{field}`, ")?;
                return match expected {
                    [] => f.write_str("there are no fields"),
                    [one] => write!(f, "expected `{one}`"),
                    [a, b] => write!(f, "expected `{a}` or `{b}`"),
                    [first, rest @ ..] => {
                        write!(f, "expected one of `{first}`")?;
                        rest.iter().try_for_each(|n| write!(f, ", `{n}`"))
                    }
                };
            }
        };
        f.write_str(text)
    }
}

/// The kind of a value, as an error names it (serde_json's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Boolean,
    Integer,
    Float,
    String,
    Array,
    Object,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Float => "floating point",
            Kind::String => "string",
            Kind::Array => "sequence",
            Kind::Object => "map",
        })
    }
}
