//! The opening handshakes over an async stream: the server's accept (the core parses and judges
//! the request and writes the 101) and the client's connect (the core writes the request and
//! judges the answer). Bytes read past either head are kept: they are already frames.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::stream::os_random;
use super::{Config, Error, WebSocketStream};
use crate::connection::Role;
use crate::deflate::{negotiate, Negotiated};
use crate::handshake::client::{make_key, parse_response_with, write_request, RequestParts};
use crate::handshake::{
    parse_request, select_protocol, validate_upgrade, write_accept, write_rejection,
    HandshakeError, MAX_HEADERS,
};
use crate::Status;

/// The 101 to send, the protocol chosen and permessage-deflate as agreed.
type Answer = (Vec<u8>, Option<String>, Option<Negotiated>);

/// What a request head came to: the answer or the refusal.
type Judged = Result<Answer, HandshakeError>;

/// Judges the request head at the start of `buf`: `None` while it is incomplete.
fn judge(buf: &[u8], config: &Config) -> Option<(Judged, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (req, n) = match parse_request(buf, &mut headers, &config.handshake) {
        Ok(Status::Partial) => return None,
        Ok(Status::Complete(req, n)) => (req, n),
        Err(e) => return Some((Err(e), buf.len())),
    };
    let judged = validate_upgrade(&req, &config.handshake).map(|up| {
        let protocol = select_protocol(&config.handshake.protocols, req.protocols());
        let deflate = config
            .deflate
            .as_ref()
            .and_then(|d| negotiate::accept(req.headers_named("sec-websocket-extensions"), d));
        let extension = deflate.map(|n| n.header_value());
        let extra: Vec<(&str, &str)> = match &extension {
            Some(value) => vec![("Sec-WebSocket-Extensions", value)],
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(256);
        write_accept(&mut out, up.key, protocol, &extra);
        (out, protocol.map(str::to_owned), deflate)
    });
    Some((judged, n))
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// Server side: reads the opening request, answers 101 (or refuses it with the HTTP status
    /// that fits, then fails with [`Error::Handshake`]). permessage-deflate is accepted when
    /// `config.deflate` is set and the client offered something it can honour.
    pub async fn accept(mut io: S, config: Config) -> Result<Self, Error> {
        let mut buf = BytesMut::with_capacity(1024);
        let (judged, n) = loop {
            if io.read_buf(&mut buf).await? == 0 {
                return Err(Error::Dropped);
            }
            if let Some(found) = judge(&buf, &config) {
                break found;
            }
            buf.reserve(1024);
        };
        match judged {
            Ok((response, protocol, deflate)) => {
                io.write_all(&response).await?;
                io.flush().await?;
                buf.advance(n);
                let role = Role::Server;
                Ok(Self::from_parts(io, role, config, buf, protocol, deflate))
            }
            Err(e) => {
                let mut response = Vec::new();
                write_rejection(&mut response, &e);
                io.write_all(&response).await?;
                io.shutdown().await?;
                Err(Error::Handshake(e))
            }
        }
    }

    /// Client side over a connected stream: sends the opening request for `target` (path and
    /// query) at `host` (the `Host` header), offering `config.handshake.protocols`, and checks
    /// the answer.
    pub async fn connect(
        mut io: S,
        host: &str,
        target: &str,
        config: Config,
    ) -> Result<Self, Error> {
        let mut nonce = [0u8; 16];
        os_random(&mut nonce);
        let key = make_key(nonce);
        let parts = RequestParts {
            host,
            target,
            protocols: &config.handshake.protocols,
            deflate: config.deflate.as_ref(),
            ..RequestParts::default()
        };
        let mut request = Vec::with_capacity(256);
        write_request(&mut request, &parts, &key);
        io.write_all(&request).await?;
        io.flush().await?;
        let mut buf = BytesMut::with_capacity(1024);
        let max_head = config.handshake.max_head_size;
        loop {
            if io.read_buf(&mut buf).await? == 0 {
                return Err(Error::Dropped);
            }
            let offered = &config.handshake.protocols;
            let deflate = config.deflate.as_ref();
            match parse_response_with(&buf, &key, offered, deflate, max_head) {
                Ok(Status::Partial) => buf.reserve(1024),
                Ok(Status::Complete(accepted, n)) => {
                    buf.advance(n);
                    let (protocol, deflate) = (accepted.protocol, accepted.deflate);
                    let role = Role::Client;
                    return Ok(Self::from_parts(io, role, config, buf, protocol, deflate));
                }
                Err(e) => return Err(Error::Response(e)),
            }
        }
    }
}

impl WebSocketStream<TcpStream> {
    /// Client side: connects over TCP to `addr` (`host:port`, also sent as the `Host` header)
    /// and runs [`connect`](Self::connect) for `target`.
    pub async fn connect_tcp(
        addr: impl ToSocketAddrs + AsRef<str>,
        target: &str,
        config: Config,
    ) -> Result<Self, Error> {
        let host = addr.as_ref().to_owned();
        let io = TcpStream::connect(addr).await?;
        io.set_nodelay(true)?;
        Self::connect(io, &host, target, config).await
    }
}
