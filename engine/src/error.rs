//! Errors: one variant per way a peer can break the protocol, each knowing its close code.

use std::fmt;

use crate::close::code;

/// A violation of RFC 6455 (or of a configured limit) by the peer. The connection answers it
/// with a close frame carrying [`ProtocolError::close_code`] and stops reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV1–3 set without a negotiated extension (§5.2).
    ReservedBits(u8),
    /// An opcode RFC 6455 reserves (§5.2).
    ReservedOpcode(u8),
    /// A control frame longer than 125 bytes (§5.5).
    ControlFrameTooLong(u64),
    /// A control frame without FIN (§5.5).
    FragmentedControlFrame,
    /// A client frame without a mask (§5.1).
    UnmaskedFrame,
    /// A server frame with a mask (§5.1).
    MaskedFrame,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    LengthOverflow,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// A text message, or a close reason, that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A close frame whose payload is a single byte (§5.5.1).
    CloseFrameTooShort,
    /// A close code that may not be sent on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A frame longer than the configured maximum.
    FrameTooLarge { len: u64, max: usize },
    /// A message longer than the configured maximum.
    MessageTooLarge { len: u64, max: usize },
    /// More fragments in one message than the configured maximum.
    TooManyFragments { max: usize },
    /// A compressed message (permessage-deflate, RFC 7692) that is not valid DEFLATE data.
    BadCompressedData,
    /// RSV1 on a continuation frame: only a message's first frame says it is compressed
    /// (RFC 7692 §6.1).
    CompressedContinuation,
}

impl ProtocolError {
    /// The close code this violation is answered with.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => code::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::MessageTooLarge { .. }
            | ProtocolError::TooManyFragments { .. } => code::MESSAGE_TOO_BIG,
            _ => code::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits(bits) => write!(f, "reserved bits {bits:#05b} set"),
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::ControlFrameTooLong(len) => {
                write!(f, "control frame of {len} bytes (max 125)")
            }
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            ProtocolError::UnmaskedFrame => f.write_str("unmasked client frame"),
            ProtocolError::MaskedFrame => f.write_str("masked server frame"),
            ProtocolError::LengthOverflow => f.write_str("payload length has its top bit set"),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message in progress")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame while a fragmented message is in progress")
            }
            ProtocolError::InvalidUtf8 => f.write_str("invalid UTF-8 in text message"),
            ProtocolError::CloseFrameTooShort => f.write_str("close frame payload of 1 byte"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            ProtocolError::InvalidCloseReason => f.write_str("close reason is not UTF-8"),
            ProtocolError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            ProtocolError::MessageTooLarge { len, max } => {
                write!(
                    f,
                    "message of at least {len} bytes exceeds the limit of {max}"
                )
            }
            ProtocolError::TooManyFragments { max } => {
                write!(f, "message has more than {max} fragments")
            }
            ProtocolError::BadCompressedData => f.write_str("invalid compressed data"),
            ProtocolError::CompressedContinuation => f.write_str("RSV1 on a continuation frame"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why a message could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// A close frame was already sent: RFC 6455 §5.5.1 forbids further data frames.
    Closed,
    /// A control frame payload over 125 bytes.
    ControlFrameTooLong,
    /// A close code that may not be sent.
    InvalidCloseCode(u16),
    /// A fragment sequence used out of order (a continuation without a start, or a new
    /// message before the previous one was finished).
    FragmentOrder,
    /// A binary message (or text that is not UTF-8) to a SockJS session, which carries text
    /// only.
    NotText,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection is closing"),
            SendError::ControlFrameTooLong => f.write_str("control frame payload over 125 bytes"),
            SendError::InvalidCloseCode(c) => write!(f, "close code {c} may not be sent"),
            SendError::FragmentOrder => f.write_str("fragments sent out of order"),
            SendError::NotText => f.write_str("a SockJS session carries text messages only"),
        }
    }
}

impl std::error::Error for SendError {}
