//! The opening handshake (RFC 6455 §4), sans-IO: the server parses and judges the request and
//! writes the response into the caller's buffer; the client (see [`client`]) writes the request
//! and judges the response.
//!
//! Parsing follows httparse: the caller owns the header array, everything is borrowed from the
//! input, and a partial head yields [`Status::Partial`] so the driver can read more. A head that
//! outgrows the configured size or header count fails with 431 rather than waiting forever.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::Status;

pub mod client;

/// The fixed GUID of RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The most headers any configuration can allow (the size of the caller's header array).
pub const MAX_HEADERS: usize = 64;

/// Which `Origin` values the server accepts (browsers send one; other clients usually do not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    Any,
    /// Exact origins such as `https://chat.example.com`, compared ignoring ASCII case. A
    /// request without an `Origin` header is not a browser's and is allowed.
    List(Vec<String>),
}

impl Origins {
    /// Whether a request with this `Origin` (if any) is allowed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (Origins::List(allowed), Some(origin)) => {
                allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
            }
            _ => true,
        }
    }
}

/// Handshake settings, each default with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Largest request head. Default 8 KiB: browsers' handshakes with cookies stay well under
    /// it, and it bounds what a slow client can make the server hold.
    pub max_head_size: usize,
    /// Most header lines. Default 48 (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
    pub allowed_origins: Origins,
    /// Sub-protocols the server speaks, in order of preference (e.g. `v12.stomp`).
    pub protocols: Vec<String>,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            max_head_size: 8 << 10,
            max_headers: 48,
            allowed_origins: Origins::Any,
            protocols: Vec::new(),
        }
    }
}

/// Why a handshake request was refused. Each maps to the HTTP status that answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not parseable as an HTTP/1.x request head.
    Malformed(&'static str),
    HeadTooLarge,
    TooManyHeaders,
    MethodNotGet,
    NotHttp11,
    MissingHost,
    /// `Upgrade: websocket` without `Connection: Upgrade`.
    MissingConnectionUpgrade,
    MissingKey,
    /// `Sec-WebSocket-Key` that is not 16 base64-encoded bytes, or more than one of them.
    InvalidKey,
    /// A `Sec-WebSocket-Version` other than 13 (answered with 426 and the version we speak).
    UnsupportedVersion,
    OriginNotAllowed,
    /// A request body over the server's limit (answered with 413).
    BodyTooLarge,
}

impl HandshakeError {
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::BodyTooLarge => 413,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginNotAllowed => 403,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            HandshakeError::Malformed(why) => return write!(f, "malformed request: {why}"),
            HandshakeError::HeadTooLarge => "request head too large",
            HandshakeError::TooManyHeaders => "too many header lines",
            HandshakeError::MethodNotGet => "websocket upgrade requires GET",
            HandshakeError::NotHttp11 => "websocket upgrade requires HTTP/1.1",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingConnectionUpgrade => "missing Connection: Upgrade",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::BodyTooLarge => "request body too large",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be 16 base64-encoded bytes",
            HandshakeError::UnsupportedVersion => {
                "unsupported Sec-WebSocket-Version (13 is supported)"
            }
            HandshakeError::OriginNotAllowed => "origin not allowed",
        };
        f.write_str(text)
    }
}

impl std::error::Error for HandshakeError {}

/// A parsed request head, borrowed from the input and the caller's header array.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// The request target as sent: path and query.
    pub target: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: &'h [httparse::Header<'b>],
}

/// Does a comma-separated header list contain `token` (ASCII case-insensitive)?
fn list_has(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

impl<'h, 'b> Request<'h, 'b> {
    pub fn path(&self) -> &'b str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first header called `name` (ASCII case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers_named(name).next()
    }

    /// The first header called `name` if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'b str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header called `name`, in order.
    pub fn headers_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'b [u8]> + Clone + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    }

    /// Does any header called `name` list `token`?
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name).any(|v| list_has(v, token))
    }

    /// Whether the client keeps the connection for another request: HTTP/1.1 unless it says
    /// `Connection: close`, HTTP/1.0 only if it says `Connection: keep-alive`.
    pub fn keeps_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.version == 1 || self.has_token("connection", "keep-alive")
    }

    /// Is this an attempt to open a WebSocket (`Upgrade: websocket`)? Other requests are plain
    /// HTTP for the application to answer.
    pub fn is_websocket(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }

    /// Sub-protocols the client offered, in its order.
    pub fn protocols<'s>(&'s self) -> impl Iterator<Item = &'b str> + Clone + 's {
        self.headers_named("sec-websocket-protocol")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// `Content-Length` of a plain HTTP request: `Ok(None)` when absent, `Err` when invalid.
    pub fn content_length(&self) -> Result<Option<usize>, HandshakeError> {
        let mut values = self.headers_named("content-length");
        let Some(first) = values.next() else {
            return Ok(None);
        };
        let bad = HandshakeError::Malformed("invalid Content-Length");
        if values.any(|v| v != first) {
            return Err(bad);
        }
        let text = std::str::from_utf8(first).map_err(|_| bad)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        text.parse().map(Some).map_err(|_| bad)
    }
}

/// Decodes a chunked request body (RFC 9112 §7.1) from the start of `buf`: `Ok(Some((body,
/// used)))` once the last chunk (and trailers) arrived, `Ok(None)` while more is needed, `Err`
/// when it is malformed or its data grows past `max` bytes.
pub fn decode_chunked(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, HandshakeError> {
    let bad = HandshakeError::Malformed("invalid chunked body");
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            // A size line longer than this is nobody's chunk size.
            return if buf.len() - pos > 1024 {
                Err(bad)
            } else {
                Ok(None)
            };
        };
        let line = &buf[pos..pos + line_len];
        let hex = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or(&[])
            .trim_ascii();
        if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad);
        }
        let size = usize::from_str_radix(std::str::from_utf8(hex).map_err(|_| bad)?, 16)
            .map_err(|_| bad)?;
        pos += line_len + 2;
        if size == 0 {
            // Trailers, each a line, until an empty one.
            loop {
                let Some(end) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return if buf.len() - pos > 8192 {
                        Err(bad)
                    } else {
                        Ok(None)
                    };
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() + size > max {
            return Err(HandshakeError::BodyTooLarge);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(bad);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// Parses a request head from the start of `buf`, using at most `config.max_headers` of
/// `headers`. `Complete(request, head_len)`: bytes after `head_len` belong to what follows.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    config: &HandshakeConfig,
) -> Result<Status<Request<'h, 'b>>, HandshakeError> {
    let limit = config.max_headers.min(headers.len());
    let mut req = httparse::Request::new(&mut headers[..limit]);
    let parsed = req.parse(buf);
    match parsed {
        Ok(httparse::Status::Complete(n)) if n <= config.max_head_size => {
            let request = Request {
                method: req.method.unwrap_or(""),
                target: req.path.unwrap_or(""),
                version: req.version.unwrap_or(0),
                headers: req.headers,
            };
            Ok(Status::Complete(request, n))
        }
        Ok(_) if buf.len() >= config.max_head_size => Err(HandshakeError::HeadTooLarge),
        Ok(_) => Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooManyHeaders),
        Err(e) => Err(HandshakeError::Malformed(match e {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid line ending",
            httparse::Error::Status | httparse::Error::Version => "invalid request line",
            httparse::Error::Token => "invalid method",
            _ => "invalid request",
        })),
    }
}

/// A request judged to be a valid WebSocket opening handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// The `Sec-WebSocket-Key` as sent (base64 of 16 bytes).
    pub key: &'b [u8],
    pub origin: Option<&'b str>,
}

/// Judges a request that [`Request::is_websocket`] says is an upgrade attempt (§4.2.1).
pub fn validate_upgrade<'b>(
    req: &Request<'_, 'b>,
    config: &HandshakeConfig,
) -> Result<Upgrade<'b>, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version != 1 {
        return Err(HandshakeError::NotHttp11);
    }
    if req.header("host").is_none_or(<[u8]>::is_empty) {
        return Err(HandshakeError::MissingHost);
    }
    if !req.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if req.header("sec-websocket-version") != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let mut keys = req.headers_named("sec-websocket-key");
    let key = keys.next().ok_or(HandshakeError::MissingKey)?;
    if keys.next().is_some() || !matches!(BASE64.decode(key), Ok(k) if k.len() == 16) {
        return Err(HandshakeError::InvalidKey);
    }
    let origin = req
        .header("origin")
        .map(|o| std::str::from_utf8(o).unwrap_or(""));
    if !config.allowed_origins.allows(origin) {
        return Err(HandshakeError::OriginNotAllowed);
    }
    Ok(Upgrade { key, origin })
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)), always 28 bytes.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let mut out = [0u8; 28];
    let n = BASE64.encode_slice(sha.finalize(), &mut out).unwrap_or(0);
    debug_assert_eq!(n, 28);
    out
}

/// The first of the server's protocols (in its order of preference) that the client offered.
pub fn select_protocol<'s, 'c>(
    supported: &'s [String],
    offered: impl Iterator<Item = &'c str> + Clone,
) -> Option<&'s str> {
    supported
        .iter()
        .find(|s| offered.clone().any(|o| o == s.as_str()))
        .map(String::as_str)
}

/// Writes the 101 response.
pub fn write_accept(out: &mut Vec<u8>, key: &[u8], protocol: Option<&str>, extra: &[(&str, &str)]) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        write_header(out, "Sec-WebSocket-Protocol", p);
    }
    for (name, value) in extra {
        write_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // A header value cannot carry a line break: drop any rather than split the response.
    out.extend(value.bytes().filter(|&b| b != b'\r' && b != b'\n'));
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses this crate writes.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a complete HTTP response that closes the connection.
pub fn write_response(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    write_response_with(out, status, headers, body, false);
}

/// Writes a complete HTTP response, which keeps the connection for the next request when
/// `keep_alive` (see [`Request::keeps_alive`]). 204 and 304 responses carry no body and no
/// length.
pub fn write_response_with(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let body_allowed = !matches!(status, 204 | 304);
    let length = body_allowed.then_some(body.len());
    write_head(out, status, headers, length, keep_alive);
    if body_allowed {
        out.extend_from_slice(body);
    }
}

/// Writes a response head: the status line, `headers`, `Content-Length` when `length` is
/// given, and `Connection`.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    length: Option<usize>,
    keep_alive: bool,
) {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    for (name, value) in headers {
        write_header(out, name, value);
    }
    if let Some(length) = length {
        write_header(out, "Content-Length", &length.to_string());
    }
    write_header(
        out,
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    out.extend_from_slice(b"\r\n");
}

/// Writes the response that refuses a handshake: its status and a one-line reason.
pub fn write_rejection(out: &mut Vec<u8>, error: &HandshakeError) {
    let body = format!("{error}\n");
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    if *error == HandshakeError::UnsupportedVersion {
        headers.push(("Sec-WebSocket-Version", "13"));
    }
    write_response(out, error.status(), &headers, body.as_bytes());
}

#[cfg(test)]
mod tests;
