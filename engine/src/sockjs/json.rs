//! The JSON SockJS speaks: strings out (escaped as the protocol asks), arrays of strings in.
//!
//! Outgoing messages are JSON strings, with the escapes `JSON.stringify` makes (`\"`, `\\`,
//! `\b \f \n \r \t`, other controls as `\u00xx`) plus the ranges browsers and proxies mangle,
//! which the protocol names: U+200C–U+200F, U+2028–U+202F, U+2060–U+206F and U+FFF0–U+FFFF,
//! always as lowercase `\uxxxx`.
//!
//! Incoming payloads are a JSON array of strings (`xhr_send`, `jsonp_send`, and usually the
//! WebSocket transport) or a single string (the WebSocket transport may send that too). The
//! parser takes exactly that and nothing else; `\u` escapes are decoded, surrogate pairs
//! joined, and a lone surrogate (valid in JavaScript, not in UTF-8) becomes U+FFFD.

use std::fmt;

/// Why a payload was refused. The protocol answers both with a 500 and these exact texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Nothing was sent.
    Empty,
    /// Not a JSON array of strings (or a string, where one is allowed).
    Broken,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadError::Empty => "Payload expected.",
            PayloadError::Broken => "Broken JSON encoding.",
        })
    }
}

impl std::error::Error for PayloadError {}

/// Whether the protocol wants `c` escaped in what the server sends.
fn must_escape(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f'
        | '\u{200c}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{fff0}'..='\u{ffff}')
}

/// Appends `text` as a JSON string (with its quotes) to `out`.
pub fn push_string(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut plain = 0;
    for (i, c) in text.char_indices() {
        let short: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\x08' => b"\\b",
            '\x0c' => b"\\f",
            c if must_escape(c) => {
                out.extend_from_slice(&text.as_bytes()[plain..i]);
                push_unicode_escape(out, c as u32);
                plain = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&text.as_bytes()[plain..i]);
        out.extend_from_slice(short);
        plain = i + c.len_utf8();
    }
    out.extend_from_slice(&text.as_bytes()[plain..]);
    out.push(b'"');
}

fn push_unicode_escape(out: &mut Vec<u8>, unit: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xf) as usize]);
    }
}

/// `text` as a JSON string (with its quotes).
pub fn string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    push_string(&mut out, text);
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

/// Parses a payload: a JSON array of strings, or (when `single_allowed`) one JSON string.
/// Surrounding whitespace is allowed.
pub fn parse_messages(input: &[u8], single_allowed: bool) -> Result<Vec<String>, PayloadError> {
    let mut p = Parser { input, pos: 0 };
    p.skip_ws();
    if p.pos == input.len() {
        return Err(PayloadError::Empty);
    }
    let messages = match p.peek() {
        Some(b'[') => p.array()?,
        Some(b'"') if single_allowed => vec![p.string()?],
        _ => return Err(PayloadError::Broken),
    };
    p.skip_ws();
    if p.pos != input.len() {
        return Err(PayloadError::Broken);
    }
    Ok(messages)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, PayloadError> {
        let b = self.peek().ok_or(PayloadError::Broken)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn array(&mut self) -> Result<Vec<String>, PayloadError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(PayloadError::Broken);
            }
            items.push(self.string()?);
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b']' => return Ok(items),
                _ => return Err(PayloadError::Broken),
            }
        }
    }

    fn string(&mut self) -> Result<String, PayloadError> {
        self.pos += 1; // '"'
        let mut out = Vec::new();
        loop {
            // Copy a run of plain bytes at once.
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.input[start..self.pos]);
            match self.next()? {
                b'"' => break,
                b'\\' => self.escape(&mut out)?,
                _ => return Err(PayloadError::Broken), // a raw control character
            }
        }
        String::from_utf8(out).map_err(|_| PayloadError::Broken)
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        let c = match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xd800..=0xdbff => {
                        // A high surrogate: joined with a low one if one follows.
                        let rest = &self.input[self.pos..];
                        let low = (rest.len() >= 6 && rest[0] == b'\\' && rest[1] == b'u')
                            .then(|| hex_value(&rest[2..6]))
                            .flatten()
                            .filter(|low| (0xdc00..=0xdfff).contains(low));
                        match low {
                            Some(low) => {
                                self.pos += 6;
                                let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                                char::from_u32(code).unwrap_or('\u{fffd}')
                            }
                            None => '\u{fffd}',
                        }
                    }
                    0xdc00..=0xdfff => '\u{fffd}',
                    _ => char::from_u32(unit).unwrap_or('\u{fffd}'),
                }
            }
            _ => return Err(PayloadError::Broken),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, PayloadError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or(PayloadError::Broken)?;
        let value = hex_value(digits).ok_or(PayloadError::Broken)?;
        self.pos += 4;
        Ok(value)
    }
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc * 16 + v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_stringify_does_and_the_protocols_ranges() {
        assert_eq!(string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(string("  \0\n\r "), r#""  \u0000\n\r ""#);
        assert_eq!(string("\x01\x1f\t\x08\x0c"), r#""\u0001\u001f\t\b\f""#);
        assert_eq!(
            string("\u{200c}\u{2028}\u{2060}\u{fff0}\u{ffff}"),
            r#""\u200c\u2028\u2060\ufff0\uffff""#
        );
        // Everything else goes as it is, UTF-8.
        assert_eq!(string("é€😀\u{7f}"), "\"é€😀\u{7f}\"");
    }

    #[test]
    fn every_character_the_server_must_escape_is_escaped() {
        for unit in 0..=0xffffu32 {
            let Some(c) = char::from_u32(unit) else {
                continue;
            };
            let encoded = string(&c.to_string());
            if must_escape(c) && !matches!(c, '\n' | '\r' | '\t' | '\x08' | '\x0c') {
                assert_eq!(encoded, format!("\"\\u{unit:04x}\""), "U+{unit:04X}");
            }
            // And it always decodes back.
            assert_eq!(
                parse_messages(encoded.as_bytes(), true),
                Ok(vec![c.to_string()]),
                "U+{unit:04X}"
            );
        }
    }

    #[test]
    fn parses_arrays_and_single_strings() {
        assert_eq!(parse_messages(b"[\"a\"]", false), Ok(vec!["a".into()]));
        assert_eq!(
            parse_messages(b" [ \"a\" , \"b\\u0041\\n\" ] ", false),
            Ok(vec!["a".into(), "bA\n".into()])
        );
        assert_eq!(parse_messages(b"[]", false), Ok(vec![]));
        assert_eq!(parse_messages(b"\"x\"", true), Ok(vec!["x".into()]));
        assert_eq!(
            parse_messages(b"\"\\ud83d\\ude00 \\ud800 \\udc00\"", true),
            Ok(vec!["😀 \u{fffd} \u{fffd}".into()])
        );
        assert_eq!(
            parse_messages("[\"é\"]".as_bytes(), false),
            Ok(vec!["é".into()])
        );
    }

    #[test]
    fn refuses_what_is_not_an_array_of_strings() {
        assert_eq!(parse_messages(b"", false), Err(PayloadError::Empty));
        assert_eq!(parse_messages(b"  ", false), Err(PayloadError::Empty));
        for bad in [
            &b"[\"a"[..],
            b"[\"a\"",
            b"[\"a\",]",
            b"[1]",
            b"{}",
            b"\"x\"",
            b"[\"a\"] x",
            b"[\"\\x\"]",
            b"[\"\\u12\"]",
            b"[\"a\x01\"]",
            b"[\"\xff\"]",
            b"nul",
        ] {
            assert_eq!(
                parse_messages(bad, false),
                Err(PayloadError::Broken),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_messages(b"[\"a", true), Err(PayloadError::Broken));
    }
}
