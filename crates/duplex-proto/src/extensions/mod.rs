//! WebSocket extensions: the `Sec-WebSocket-Extensions` header (RFC 6455 §9)
//! and the one extension duplex implements, permessage-deflate (RFC 7692, in
//! [`deflate`]).
//!
//! This module owns the header's syntax: [`parse_header`] turns its values
//! into [`ExtensionOffer`]s following the §9.1 grammar, and
//! [`serialize_header`] (or `Display` on one [`ExtensionOffer`]) writes them
//! back. What an extension's parameters mean belongs to that extension's
//! module; [`ExtensionError`] has one variant for each rule either of them
//! enforces, so a failed handshake says exactly what the peer got wrong.
//!
//! Where the RFCs leave room, this module decides:
//! - Several header lines form one list (RFC 7230 §3.2.2): each line is
//!   parsed in turn and the results concatenated.
//! - Empty list elements (`a, , b`) are skipped, as RFC 7230 §7 asks of
//!   recipients.
//! - Optional whitespace (SP, HTAB) is accepted around every `,`, `;` and
//!   `=`: §9.1 is written in RFC 2616's ABNF, which implies linear whitespace
//!   between tokens.
//! - Names are compared exactly, as Python websockets and `ws` compare them;
//!   the registered names (`permessage-deflate`) are lower case.

use std::fmt;

pub mod deflate;

pub use deflate::{Deflate, DeflateConfig, DeflateError, DeflateParams};

/// One extension as written in a `Sec-WebSocket-Extensions` header: its name
/// and its parameters, in header order.
///
/// A client's header holds offers, a server's holds the accepted ones; both
/// have this shape (RFC 6455 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension's registered name, e.g. `permessage-deflate`.
    pub name: String,
    /// Each parameter's name and value; `None` for a parameter given without
    /// `=`. Values given as quoted strings are stored unquoted.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// An extension with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        ExtensionOffer {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter, with a value or without one.
    pub fn with_param(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.params.push((name.into(), value.map(str::to_owned)));
        self
    }
}

impl fmt::Display for ExtensionOffer {
    /// Writes `name; param; param=value`. A value that is not a token is
    /// written as a quoted string, although RFC 6455 §9.1 lets a peer reject it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            match value {
                None => {}
                Some(value) if is_token(value.as_bytes()) => write!(f, "={value}")?,
                Some(value) => {
                    f.write_str("=\"")?;
                    for c in value.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Writes a list of extensions as one `Sec-WebSocket-Extensions` value.
pub fn serialize_header(extensions: &[ExtensionOffer]) -> String {
    extensions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything that can be wrong with a `Sec-WebSocket-Extensions` header or
/// with an extension's parameters, one variant per rule.
///
/// Non-exhaustive: a rule or failure added later is a new variant, not a
/// breaking change.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtensionError {
    /// RFC 6455 §9.1: the value does not follow the grammar.
    #[error(
        "malformed Sec-WebSocket-Extensions header (line {line}, byte {at}): expected {expected}"
    )]
    Syntax {
        /// Which header line, counting from 0.
        line: usize,
        /// Byte offset in that line.
        at: usize,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// RFC 6455 §9.1: a value written as a quoted string must still be a
    /// token once unquoted.
    #[error("value {value:?} of parameter {param:?} is not a token")]
    QuotedValueNotToken {
        /// The parameter's name.
        param: String,
        /// The unquoted value.
        value: String,
    },
    /// The extension defines no parameter of that name (RFC 7692 §7: an offer
    /// with one is declined, a response with one fails the handshake).
    #[error("unknown parameter {param:?} for {extension}")]
    UnknownParameter {
        /// The extension's name.
        extension: String,
        /// The parameter's name.
        param: String,
    },
    /// RFC 7692 §7: a parameter appears more than once.
    #[error("duplicate parameter {param}")]
    DuplicateParameter {
        /// The parameter's name.
        param: &'static str,
    },
    /// RFC 7692 §7.1.2: window bits are a decimal 8 to 15 without leading
    /// zeros.
    #[error("invalid value {value:?} for {param}: expected 8 to 15")]
    InvalidWindowBits {
        /// The parameter's name.
        param: &'static str,
        /// The value as received.
        value: String,
    },
    /// RFC 7692 §7.1.1: the no_context_takeover parameters have no value.
    #[error("parameter {param} takes no value, got {value:?}")]
    UnexpectedValue {
        /// The parameter's name.
        param: &'static str,
        /// The value as received.
        value: String,
    },
    /// RFC 7692 §7.1.2: the parameter needs a value here
    /// (`server_max_window_bits` always, `client_max_window_bits` in a
    /// response).
    #[error("parameter {param} needs a value")]
    MissingValue {
        /// The parameter's name.
        param: &'static str,
    },
    /// RFC 6455 §9.1: the server answered with an extension the client did
    /// not offer.
    #[error("server accepted extension {name:?}, which was not offered")]
    NotOffered {
        /// The extension's name.
        name: String,
    },
    /// RFC 7692 §5: the server accepted permessage-deflate more than once.
    #[error("server accepted {name} more than once")]
    DuplicateExtension {
        /// The extension's name.
        name: String,
    },
    /// RFC 7692 §7.1.2.2: the response has a parameter that only answers an
    /// offer which had it, and the offer did not.
    #[error("server answered {param}, which was not offered")]
    ParameterNotOffered {
        /// The parameter's name.
        param: &'static str,
    },
    /// RFC 7692 §7.1.2: the response's window is larger than the offer
    /// allowed.
    #[error("server answered {param}={answered}, more than the {offered} offered")]
    WindowBitsTooLarge {
        /// The parameter's name.
        param: &'static str,
        /// The value the offer gave.
        offered: u8,
        /// The value the server answered.
        answered: u8,
    },
    /// RFC 7692 §7.1.1.1, §7.1.2.1: a server that accepts an offer with this
    /// parameter must include it in its response.
    #[error("server accepted the offer without {param}, which it requested")]
    MissingParameter {
        /// The parameter's name.
        param: &'static str,
    },
}

/// Parses the values of every `Sec-WebSocket-Extensions` header line, in
/// order, into one list (RFC 6455 §9.1).
///
/// ```
/// # use duplex_proto::extensions::parse_header;
/// let offers = parse_header(&[
///     "permessage-deflate; client_max_window_bits",
///     "permessage-deflate; server_max_window_bits=\"10\"",
/// ])
/// .unwrap();
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[1].params[0], ("server_max_window_bits".into(), Some("10".into())));
/// ```
pub fn parse_header(values: &[&str]) -> Result<Vec<ExtensionOffer>, ExtensionError> {
    let mut extensions = Vec::new();
    for (line, value) in values.iter().enumerate() {
        Parser {
            bytes: value.as_bytes(),
            pos: 0,
            line,
        }
        .extension_list(&mut extensions)?;
    }
    Ok(extensions)
}

/// A cursor over one header line.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Parser<'a> {
    /// `extension-list = 1#extension`, each
    /// `extension = extension-token *( ";" extension-param )`.
    fn extension_list(mut self, out: &mut Vec<ExtensionOffer>) -> Result<(), ExtensionError> {
        loop {
            self.skip_whitespace();
            match self.peek() {
                None => return Ok(()),
                // RFC 7230 §7: empty list elements are ignored.
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            let mut extension = ExtensionOffer::new(self.token("an extension name")?);
            loop {
                self.skip_whitespace();
                match self.peek() {
                    None => break,
                    Some(b',') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b';') => {
                        self.pos += 1;
                        extension.params.push(self.param()?);
                    }
                    Some(_) => return Err(self.error("';' or ','")),
                }
            }
            out.push(extension);
        }
    }

    /// `extension-param = token [ "=" (token | quoted-string) ]`.
    fn param(&mut self) -> Result<(String, Option<String>), ExtensionError> {
        self.skip_whitespace();
        let name = self.token("a parameter name")?;
        self.skip_whitespace();
        if self.peek() != Some(b'=') {
            return Ok((name.to_owned(), None));
        }
        self.pos += 1;
        self.skip_whitespace();
        let value = if self.peek() == Some(b'"') {
            self.quoted_string(name)?
        } else {
            self.token("a token or quoted-string value")?.to_owned()
        };
        Ok((name.to_owned(), Some(value)))
    }

    /// A non-empty run of `tchar`.
    fn token(&mut self, expected: &'static str) -> Result<&'a str, ExtensionError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(expected));
        }
        // Only ASCII tchar bytes were taken, so this is valid UTF-8.
        Ok(std::str::from_utf8(&self.bytes[start..self.pos]).expect("tchar is ASCII"))
    }

    /// RFC 7230 §3.2.6 `quoted-string`, unescaped; §9.1 then requires the
    /// result to be a token.
    fn quoted_string(&mut self, param: &str) -> Result<String, ExtensionError> {
        self.pos += 1; // the opening DQUOTE
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("'\"' closing the quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => value.push(b),
                        _ => return Err(self.error("a character after '\\'")),
                    }
                }
                Some(b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => value.push(b),
                Some(_) => return Err(self.error("a quoted-string character")),
            }
            self.pos += 1;
        }
        let value = String::from_utf8_lossy(&value).into_owned();
        if !is_token(value.as_bytes()) {
            return Err(ExtensionError::QuotedValueNotToken {
                param: param.to_owned(),
                value,
            });
        }
        Ok(value)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn error(&self, expected: &'static str) -> ExtensionError {
        ExtensionError::Syntax {
            line: self.line,
            at: self.pos,
            expected,
        }
    }
}

/// RFC 7230 §3.2.6 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 7230 §3.2.6 `token = 1*tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().copied().all(is_tchar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        params
            .iter()
            .fold(ExtensionOffer::new(name), |e, (n, v)| e.with_param(*n, *v))
    }

    #[test]
    fn parses_names_and_params() {
        let parsed = parse_header(&["foo, bar; baz=2; qux, permessage-deflate"]).unwrap();
        assert_eq!(
            parsed,
            vec![
                ext("foo", &[]),
                ext("bar", &[("baz", Some("2")), ("qux", None)]),
                ext("permessage-deflate", &[]),
            ]
        );
    }

    #[test]
    fn quoted_values_are_unquoted() {
        let parsed = parse_header(&[r#"a; b="10"; c="1\5""#]).unwrap();
        assert_eq!(
            parsed,
            vec![ext("a", &[("b", Some("10")), ("c", Some("15"))])]
        );
    }

    #[test]
    fn quoted_value_must_still_be_a_token() {
        for value in [r#""""#, r#""a b""#, r#""a,b""#, r#""\"""#, r#""é""#] {
            let header = format!("a; b={value}");
            assert!(
                matches!(
                    parse_header(&[&header]),
                    Err(ExtensionError::QuotedValueNotToken { ref param, .. }) if param == "b"
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn whitespace_is_tolerated_around_separators() {
        let parsed = parse_header(&[" \ta \t;\t b \t=\t 1 \t; c ;d= \"2\" \t,\t e\t "]).unwrap();
        assert_eq!(
            parsed,
            vec![
                ext("a", &[("b", Some("1")), ("c", None), ("d", Some("2"))]),
                ext("e", &[]),
            ]
        );
    }

    #[test]
    fn several_lines_are_one_list() {
        let parsed = parse_header(&["a; x", "b, c", ""]).unwrap();
        assert_eq!(
            parsed,
            vec![ext("a", &[("x", None)]), ext("b", &[]), ext("c", &[])]
        );
        assert_eq!(parse_header(&[]).unwrap(), vec![]);
    }

    #[test]
    fn empty_list_elements_are_skipped() {
        let parsed = parse_header(&[", a ,, ,b,"]).unwrap();
        assert_eq!(parsed, vec![ext("a", &[]), ext("b", &[])]);
    }

    #[test]
    fn bad_syntax_is_rejected_with_its_position() {
        let cases: &[(&str, usize, &str)] = &[
            (";a", 0, "an extension name"),
            ("a;", 2, "a parameter name"),
            ("a; ;b", 3, "a parameter name"),
            ("a b", 2, "';' or ','"),
            ("a=1", 1, "';' or ','"),
            ("a; b=", 5, "a token or quoted-string value"),
            ("a; b==1", 5, "a token or quoted-string value"),
            ("a; b=c/d", 6, "';' or ','"),
            ("a; b=\"12", 8, "'\"' closing the quoted string"),
            ("a; b=\"1\\", 8, "a character after '\\'"),
            ("a; b=\"1\x01\"", 7, "a quoted-string character"),
            ("a; b=1 2", 7, "';' or ','"),
            ("a/b", 1, "';' or ','"),
            ("\"a\"", 0, "an extension name"),
            ("é", 0, "an extension name"),
        ];
        for &(header, at, expected) in cases {
            assert_eq!(
                parse_header(&["ok", header]),
                Err(ExtensionError::Syntax {
                    line: 1,
                    at,
                    expected
                }),
                "{header:?}"
            );
        }
    }

    #[test]
    fn display_writes_the_header_form() {
        let e = ext("permessage-deflate", &[("a", None), ("b", Some("10"))]);
        assert_eq!(e.to_string(), "permessage-deflate; a; b=10");
        let list = [e, ext("x", &[])];
        assert_eq!(serialize_header(&list), "permessage-deflate; a; b=10, x");
        assert_eq!(serialize_header(&[]), "");
    }

    #[test]
    fn display_quotes_values_that_are_not_tokens() {
        let e = ext("a", &[("b", Some(r#"x "y"\z"#))]);
        assert_eq!(e.to_string(), r#"a; b="x \"y\"\\z""#);
    }

    fn token() -> impl Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
    }

    proptest! {
        #[test]
        fn serialize_then_parse_is_identity(
            list in prop::collection::vec(
                (token(), prop::collection::vec((token(), prop::option::of(token())), 0..5)),
                0..5,
            )
        ) {
            let list: Vec<ExtensionOffer> = list
                .into_iter()
                .map(|(name, params)| ExtensionOffer { name, params })
                .collect();
            prop_assert_eq!(parse_header(&[&serialize_header(&list)]).unwrap(), list);
        }

        #[test]
        fn parse_never_panics(header in "\\PC{0,40}") {
            let _ = parse_header(&[&header]);
        }
    }
}
