//! Validation of what people type: room names, nicknames, messages.

use std::fmt;

/// Longest room name, in characters (after trimming).
pub const MAX_ROOM_NAME_CHARS: usize = 64;
/// Longest nickname, in characters (after trimming).
pub const MAX_NICKNAME_CHARS: usize = 32;
/// Longest message, in characters (after trimming), by default.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// Why a name (of a room, or a nickname) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Nothing left after trimming whitespace.
    Empty,
    /// More than `max` characters after trimming.
    TooLong { max: usize },
    /// A control character, or an invisible formatting one (zero-width, bidi override).
    ControlCharacter,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("must not be empty"),
            NameError::TooLong { max } => write!(f, "must be at most {max} characters"),
            NameError::ControlCharacter => f.write_str("must not contain control characters"),
        }
    }
}

impl std::error::Error for NameError {}

/// Characters that are not shown but change how the text around them reads: zero-width
/// spaces and joiners, bidirectional embeddings, overrides and isolates, the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Trims `raw` and checks it is 1..=`max` characters with no control characters; returns
/// the trimmed name.
pub fn validate_name(raw: &str, max: usize) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(NameError::ControlCharacter);
    }
    if name.chars().count() > max {
        return Err(NameError::TooLong { max });
    }
    Ok(name.to_owned())
}

/// A room name: 1–64 characters after trimming, no control characters.
pub fn validate_room_name(raw: &str) -> Result<String, NameError> {
    validate_name(raw, MAX_ROOM_NAME_CHARS)
}

/// A nickname: 1–32 characters after trimming, no control characters.
pub fn validate_nickname(raw: &str) -> Result<String, NameError> {
    validate_name(raw, MAX_NICKNAME_CHARS)
}

/// Why a message text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    Empty,
    TooLong {
        max: usize,
    },
    /// A control character other than newline and tab.
    ControlCharacter,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Empty => f.write_str("message must not be empty"),
            MessageError::TooLong { max } => {
                write!(f, "message must be at most {max} characters")
            }
            MessageError::ControlCharacter => {
                f.write_str("message must not contain control characters")
            }
        }
    }
}

impl std::error::Error for MessageError {}

/// Trims a message and checks it is 1..=`max` characters, newlines and tabs allowed
/// (zero-width joiners and bidi marks too: emoji sequences and right-to-left text need them).
pub fn validate_message(raw: &str, max: usize) -> Result<String, MessageError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(MessageError::Empty);
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(MessageError::ControlCharacter);
    }
    if text.chars().count() > max {
        return Err(MessageError::TooLong { max });
    }
    Ok(text.to_owned())
}

/// The case-insensitive form of a name, for uniqueness checks.
pub(crate) fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// A URL-safe slug of a room name: ASCII letters and digits, lower-cased, other runs turned
/// into single dashes, at most 24 characters; empty when nothing ASCII is left.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
        if out.len() >= 24 {
            break;
        }
    }
    out.truncate(24);
    while out.ends_with('-') {
        out.pop();
    }
    out
}
