//! Codec errors: [`StompError`] for bad input from a peer, [`EncodeError`] for frames we cannot write.

use std::fmt;

/// Why a peer's bytes are not a valid STOMP frame.
///
/// Every variant is fatal for the connection: STOMP has no way to resync
/// after a malformed frame. The `Display` text is short, single-line and
/// meant to be sent as the `message` header of the `ERROR` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StompError {
    /// The command line is not one of the STOMP commands (names are
    /// case-sensitive; a command line longer than any command is reported as
    /// soon as that is certain).
    UnknownCommand,
    /// A NUL octet appeared in the command line or a header line, usually a
    /// frame that lacks the blank line ending its headers.
    NulInHead,
    /// A header line has no `:` separator.
    MissingColon,
    /// A header line starts with `:`.
    EmptyHeaderName,
    /// A header name or value holds a `\` escape this version does not define
    /// (STOMP 1.1: `\n \c \\`; 1.2 adds `\r`), or ends in a lone `\`.
    InvalidEscape,
    /// A header name or value is not UTF-8.
    InvalidUtf8,
    /// The first `content-length` header is not a decimal octet count that
    /// fits in `usize`.
    InvalidContentLength,
    /// More header lines than [`Limits::max_headers`](super::Limits::max_headers).
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// A header line (without its line ending) is longer than
    /// [`Limits::max_header_line`](super::Limits::max_header_line) bytes.
    HeaderLineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// The command line, headers and blank line together exceed
    /// [`Limits::max_head`](super::Limits::max_head) bytes.
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The body (declared by `content-length`, or read so far while looking
    /// for the NUL) exceeds [`Limits::max_body`](super::Limits::max_body) bytes.
    BodyTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The octet after a `content-length` body is not NUL.
    BodyNotTerminated,
}

impl fmt::Display for StompError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StompError::UnknownCommand => f.write_str("unknown command"),
            StompError::NulInHead => {
                f.write_str("NUL octet in frame headers (missing blank line after the headers?)")
            }
            StompError::MissingColon => f.write_str("malformed header line (no colon)"),
            StompError::EmptyHeaderName => f.write_str("malformed header line (empty name)"),
            StompError::InvalidEscape => f.write_str("invalid escape sequence in header"),
            StompError::InvalidUtf8 => f.write_str("header is not valid UTF-8"),
            StompError::InvalidContentLength => f.write_str("invalid content-length header"),
            StompError::TooManyHeaders { limit } => {
                write!(f, "too many headers (limit {limit})")
            }
            StompError::HeaderLineTooLong { limit } => {
                write!(f, "header line too long (limit {limit} bytes)")
            }
            StompError::HeadTooLarge { limit } => {
                write!(f, "frame headers too large (limit {limit} bytes)")
            }
            StompError::BodyTooLarge { limit } => {
                write!(f, "frame body too large (limit {limit} bytes)")
            }
            StompError::BodyNotTerminated => {
                f.write_str("frame body not followed by NUL (wrong content-length?)")
            }
        }
    }
}

impl std::error::Error for StompError {}

/// Why a frame cannot be encoded. Nothing is written when this is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// A header name is empty.
    EmptyHeaderName,
    /// A header name or value holds an octet the frame's encoding cannot carry:
    /// NUL anywhere; CR or LF where headers are not escaped (STOMP 1.0, before
    /// negotiation, and `CONNECT`/`STOMP`/`CONNECTED` frames); CR in 1.1; a
    /// colon in a name where headers are not escaped.
    UnencodableHeader,
    /// The body contains NUL but no `content-length` header was asked for.
    NulInBody,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::EmptyHeaderName => "empty header name",
            EncodeError::UnencodableHeader => {
                "header holds an octet this STOMP version cannot carry"
            }
            EncodeError::NulInBody => "body contains NUL but content-length was not requested",
        })
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_single_line_header_safe_text() {
        let all = [
            StompError::UnknownCommand,
            StompError::NulInHead,
            StompError::MissingColon,
            StompError::EmptyHeaderName,
            StompError::InvalidEscape,
            StompError::InvalidUtf8,
            StompError::InvalidContentLength,
            StompError::TooManyHeaders { limit: 1 },
            StompError::HeaderLineTooLong { limit: 2 },
            StompError::HeadTooLarge { limit: 3 },
            StompError::BodyTooLarge { limit: 4 },
            StompError::BodyNotTerminated,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            let m = e.to_string();
            assert!(!m.is_empty());
            // Sendable raw even in STOMP 1.0 `ERROR` frames.
            assert!(
                !m.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0 | b'\\')),
                "{m}"
            );
            assert!(seen.insert(m), "duplicate message for {e:?}");
        }
        assert_eq!(
            StompError::BodyTooLarge { limit: 10 }.to_string(),
            "frame body too large (limit 10 bytes)"
        );
    }
}
