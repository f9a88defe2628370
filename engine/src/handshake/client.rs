//! The client side of the opening handshake: the request it sends and the checks on the
//! server's answer (RFC 6455 §4.1).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::{accept_key, list_has, write_header};
use crate::deflate::negotiate::{self, AnswerError};
use crate::deflate::{DeflateConfig, Negotiated};
use crate::Status;

/// Why the server's answer does not open a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// Not parseable as an HTTP/1.1 response head.
    Malformed(&'static str),
    /// The head grew past the limit without ending.
    HeadTooLarge,
    /// A status other than 101, with the code.
    Status(u16),
    MissingUpgrade,
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` missing or not the hash of our key.
    BadAccept,
    /// The server chose a sub-protocol we did not offer.
    UnofferedProtocol(String),
    /// The server enabled an extension we did not ask for.
    UnrequestedExtension(String),
    /// The server's answer to our permessage-deflate offer cannot be used.
    BadDeflateAnswer(AnswerError),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Malformed(why) => write!(f, "malformed handshake response: {why}"),
            ResponseError::HeadTooLarge => f.write_str("handshake response head too large"),
            ResponseError::Status(code) => write!(f, "server answered {code} instead of 101"),
            ResponseError::MissingUpgrade => f.write_str("response lacks Upgrade: websocket"),
            ResponseError::MissingConnectionUpgrade => {
                f.write_str("response lacks Connection: Upgrade")
            }
            ResponseError::BadAccept => f.write_str("Sec-WebSocket-Accept does not match our key"),
            ResponseError::UnofferedProtocol(p) => {
                write!(f, "server chose sub-protocol {p:?} we did not offer")
            }
            ResponseError::UnrequestedExtension(e) => {
                write!(f, "server enabled extension {e:?} we did not ask for")
            }
            ResponseError::BadDeflateAnswer(e) => {
                write!(f, "unusable permessage-deflate answer: {e:?}")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// A fresh `Sec-WebSocket-Key` from 16 random bytes.
pub fn make_key(random: [u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    let n = BASE64.encode_slice(random, &mut out).unwrap_or(0);
    debug_assert_eq!(n, 24);
    out
}

/// What goes into the opening request.
#[derive(Clone, Debug, Default)]
pub struct RequestParts<'a> {
    /// `host[:port]` for the `Host` header.
    pub host: &'a str,
    /// Path and query, starting with `/`.
    pub target: &'a str,
    pub origin: Option<&'a str>,
    pub protocols: &'a [String],
    pub headers: &'a [(String, String)],
    /// permessage-deflate to offer (RFC 7692).
    pub deflate: Option<&'a DeflateConfig>,
}

/// Writes the opening request for `key`.
pub fn write_request(out: &mut Vec<u8>, parts: &RequestParts<'_>, key: &[u8; 24]) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(parts.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_header(out, "Host", parts.host);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
    if let Some(origin) = parts.origin {
        write_header(out, "Origin", origin);
    }
    if !parts.protocols.is_empty() {
        write_header(out, "Sec-WebSocket-Protocol", &parts.protocols.join(", "));
    }
    if let Some(config) = parts.deflate {
        write_header(out, "Sec-WebSocket-Extensions", &negotiate::offer(config));
    }
    for (name, value) in parts.headers {
        write_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The accepted handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub protocol: Option<String>,
    /// permessage-deflate as the server agreed to it.
    pub deflate: Option<Negotiated>,
}

/// Parses and judges the server's answer. `Complete(accepted, head_len)`: bytes after the head
/// are already WebSocket frames.
pub fn parse_response(
    buf: &[u8],
    key: &[u8; 24],
    offered: &[String],
    max_head: usize,
) -> Result<Status<Accepted>, ResponseError> {
    parse_response_with(buf, key, offered, None, max_head)
}

/// [`parse_response`] after an offer of permessage-deflate made for `deflate`.
pub fn parse_response_with(
    buf: &[u8],
    key: &[u8; 24],
    offered: &[String],
    deflate: Option<&DeflateConfig>,
    max_head: usize,
) -> Result<Status<Accepted>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; super::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(_) if buf.len() >= max_head => return Err(ResponseError::HeadTooLarge),
        Ok(_) => return Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::HeadTooLarge),
        Err(_) => return Err(ResponseError::Malformed("invalid status line or header")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(ResponseError::Status(code));
    }
    let named = |name: &'static str| {
        resp.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    if !named("upgrade").any(|v| list_has(v, "websocket")) {
        return Err(ResponseError::MissingUpgrade);
    }
    if !named("connection").any(|v| list_has(v, "upgrade")) {
        return Err(ResponseError::MissingConnectionUpgrade);
    }
    let expected = accept_key(key);
    let mut accepts = named("sec-websocket-accept");
    if accepts.next() != Some(&expected[..]) || accepts.next().is_some() {
        return Err(ResponseError::BadAccept);
    }
    let deflate = match deflate {
        Some(config) => negotiate::check_answer(named("sec-websocket-extensions"), config)
            .map_err(ResponseError::BadDeflateAnswer)?,
        None => {
            if let Some(ext) = named("sec-websocket-extensions").find(|v| !v.is_empty()) {
                return Err(ResponseError::UnrequestedExtension(
                    String::from_utf8_lossy(ext).into_owned(),
                ));
            }
            None
        }
    };
    let protocol = match named("sec-websocket-protocol").next() {
        None => None,
        Some(p) => {
            let p = String::from_utf8_lossy(p).into_owned();
            if !offered.contains(&p) {
                return Err(ResponseError::UnofferedProtocol(p));
            }
            Some(p)
        }
    };
    Ok(Status::Complete(Accepted { protocol, deflate }, n))
}
