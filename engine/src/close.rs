//! Close codes and the close frame payload (RFC 6455 §5.5.1, §7.4).
//!
//! The close handshake as the connection runs it:
//!
//! ```text
//!            send close                       receive close
//!   Open ─────────────────▶ CloseSent     Open ─────────────────▶ CloseReceived
//!                              │ receive close                      │ echo close (automatic)
//!                              ▼                                    ▼
//!                            Closed ◀───────────────────────────── Closed
//! ```
//!
//! After `Closed` nothing more is sent; the server then closes TCP, the client waits for it.

use crate::error::ProtocolError;

/// Well-known close codes.
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Never sent: stands for "the close frame had no code".
    pub const NO_STATUS: u16 = 1005;
    /// Never sent: stands for "the connection dropped without a close frame".
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const MANDATORY_EXTENSION: u16 = 1010;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_GATEWAY: u16 = 1014;
}

/// May `code` appear in a close frame on the wire?
///
/// RFC 6455 §7.4 defines 1000–1003 and 1007–1011; IANA's registry adds 1012–1014 (which this
/// engine itself sends, e.g. 1013 under backpressure); 3000–4999 belong to libraries and
/// applications. 1004 is reserved, 1005, 1006 and 1015 must never be sent, and everything
/// else is unassigned.
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A decoded close frame payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    pub code: u16,
    pub reason: &'a str,
}

/// Decodes a close payload: empty (no status) or a valid code plus a UTF-8 reason.
pub fn parse_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = simdutf8::basic::from_utf8(reason)
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Largest reason that fits a control frame next to the code.
pub const MAX_REASON_LEN: usize = 123;

/// Cuts `reason` to at most [`MAX_REASON_LEN`] bytes on a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_rejected_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_code(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_code(code), "{code}");
        }
    }

    #[test]
    fn payload_rules() {
        assert_eq!(parse_payload(b""), Ok(None));
        assert_eq!(
            parse_payload(b"\x03"),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(
            parse_payload(b"\x03\xe8"),
            Ok(Some(CloseFrame {
                code: 1000,
                reason: ""
            }))
        );
        assert_eq!(
            parse_payload(b"\x03\xe8bye"),
            Ok(Some(CloseFrame {
                code: 1000,
                reason: "bye"
            }))
        );
        assert_eq!(
            parse_payload(b"\x03\xed"),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_payload(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidCloseReason)
        );
        assert_eq!(ProtocolError::InvalidCloseCode(1005).close_code(), 1002);
        assert_eq!(ProtocolError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(ProtocolError::CloseFrameTooShort.close_code(), 1002);
    }

    #[test]
    fn reason_truncates_on_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert_eq!(cut.len(), 122);
    }
}
