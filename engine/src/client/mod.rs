//! The client role: a simple blocking client over the sans-IO core, for scripts, tests and the
//! Autobahn client suite. (Clients driven by an event loop, for load generation, build on the
//! same core.)

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::close::CloseFrame;
use crate::config::Limits;
use crate::connection::{Connection, DataKind, Event, Failure, MaskKeys, Read};
use crate::deflate::{DeflateConfig, Negotiated, Pool};
use crate::error::{ProtocolError, SendError};
use crate::handshake::client::{
    make_key, parse_response_with, write_request, RequestParts, ResponseError,
};
use crate::Status;

pub mod event_loop;
mod stream;
pub mod url;

use stream::ClientStream;

pub use event_loop::{
    ClientConn, ClientHandler, ClientId, Control, EventLoop, LoopConfig, LoopWaker, Target,
};
pub use url::{UrlError, WsUrl};

/// Fills `buf` from the operating system's randomness (masking keys, handshake nonces).
pub fn os_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No entropy source means no safe masking keys: nothing sensible can go on.
        panic!("operating system randomness unavailable: {e}");
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub limits: Limits,
    /// Sub-protocols to offer, in order of preference.
    pub protocols: Vec<String>,
    pub origin: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Bound on connecting and on the opening handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest handshake response head. Default 8 KiB.
    pub max_head_size: usize,
    /// Bound on each blocking read and write once the connection is open (`None`: wait as long
    /// as it takes, as an idle WebSocket may). A read that waits longer fails with
    /// [`ClientError::Timeout`]. Default `None`; tests set it, so that a missing message fails
    /// the test instead of hanging it.
    pub io_timeout: Option<Duration>,
    /// permessage-deflate to offer (RFC 7692), `None` for none. The default
    /// [`DeflateConfig`] offers `client_no_context_takeover` (a promise: each message we send
    /// is compressed alone) and asks for `server_no_context_takeover`. Default `None`.
    pub deflate: Option<DeflateConfig>,
    /// Roots for `wss://` URLs (the server's name, the URL's host, is always checked against
    /// its certificate). `None`: the platform's roots, read once per process. Default `None`.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            limits: Limits::default(),
            protocols: Vec::new(),
            origin: None,
            headers: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            max_head_size: 8 << 10,
            io_timeout: None,
            deflate: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Why a client operation failed.
#[derive(Debug)]
pub enum ClientError {
    Url(UrlError),
    /// Nobody listens there.
    Refused(io::Error),
    /// Connecting or the handshake took longer than `handshake_timeout`.
    Timeout,
    /// The server answered, but not with a valid 101.
    Handshake(ResponseError),
    /// The server broke the protocol; our close frame with its code has been sent.
    Protocol(ProtocolError),
    /// The connection dropped without a close frame.
    Dropped,
    Send(SendError),
    Io(io::Error),
    /// The TLS handshake or a TLS record failed: the server's certificate is not trusted,
    /// expired or for another name, or the server broke TLS.
    #[cfg(feature = "tls")]
    Tls(crate::tls::rustls::Error),
    /// The TLS settings could not be made (no platform roots, a host that is no valid name).
    #[cfg(feature = "tls")]
    TlsConfig(crate::tls::TlsError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Url(e) => write!(f, "{e}"),
            ClientError::Refused(e) => write!(f, "connection refused: {e}"),
            ClientError::Timeout => f.write_str("timed out"),
            ClientError::Handshake(e) => write!(f, "{e}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Dropped => f.write_str("connection dropped without a close frame"),
            ClientError::Send(e) => write!(f, "cannot send: {e}"),
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            #[cfg(feature = "tls")]
            ClientError::Tls(e) => write!(f, "TLS failed: {e}"),
            #[cfg(feature = "tls")]
            ClientError::TlsConfig(e) => write!(f, "TLS settings: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        ClientError::Send(e)
    }
}

fn io_error(e: io::Error) -> ClientError {
    #[cfg(feature = "tls")]
    if let Some(failure) = crate::tls::tls_failure(&e) {
        return ClientError::Tls(failure.clone());
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        io::ErrorKind::ConnectionRefused => ClientError::Refused(e),
        _ => ClientError::Io(e),
    }
}

/// An owned event, for callers that keep what they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Event<'_>> for OwnedEvent {
    fn from(e: Event<'_>) -> Self {
        match e {
            Event::Text(t) => OwnedEvent::Text(t.into()),
            Event::Binary(b) => OwnedEvent::Binary(b.into()),
            Event::Ping(p) => OwnedEvent::Ping(p.into()),
            Event::Pong(p) => OwnedEvent::Pong(p.into()),
            Event::Close(f) => {
                OwnedEvent::Close(f.map(|CloseFrame { code, reason }| (code, reason.into())))
            }
        }
    }
}

/// A blocking WebSocket client.
pub struct Client {
    stream: ClientStream,
    conn: Connection,
    /// Received bytes `buf[start..end]` not yet consumed by the core.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    protocol: Option<String>,
    deflate: Option<Negotiated>,
    pool: Pool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.stream.tcp().peer_addr().ok())
            .finish()
    }
}

const READ_CHUNK: usize = 64 << 10;

impl Client {
    /// Connects with the default configuration.
    pub fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, &ClientConfig::default())
    }

    pub fn connect_with(url: &str, config: &ClientConfig) -> Result<Client, ClientError> {
        let url = WsUrl::parse(url).map_err(ClientError::Url)?;
        if url.secure && cfg!(not(feature = "tls")) {
            return Err(ClientError::Url(UrlError::Scheme("wss".into())));
        }
        let addrs = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(ClientError::Io)?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, config.handshake_timeout) {
                Ok(stream) => return Client::handshake(stream, &url, config),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(ClientError::Io(io::ErrorKind::NotFound.into()), io_error))
    }

    /// Runs the opening handshake (TLS first, for a `wss://` URL) over an already connected
    /// stream.
    pub fn handshake(
        stream: TcpStream,
        url: &WsUrl,
        config: &ClientConfig,
    ) -> Result<Client, ClientError> {
        stream.set_nodelay(true).map_err(ClientError::Io)?;
        stream
            .set_read_timeout(Some(config.handshake_timeout))
            .and_then(|()| stream.set_write_timeout(Some(config.handshake_timeout)))
            .map_err(ClientError::Io)?;
        let mut stream = Client::secure(stream, url, config)?;
        stream.establish().map_err(io_error)?;
        let mut nonce = [0u8; 16];
        os_random(&mut nonce);
        let key = make_key(nonce);
        let host = url.host_header();
        let parts = RequestParts {
            host: &host,
            target: &url.target,
            origin: config.origin.as_deref(),
            protocols: &config.protocols,
            headers: &config.headers,
            deflate: config.deflate.as_ref(),
        };
        let mut request = Vec::new();
        write_request(&mut request, &parts, &key);
        stream.write_all(&request).map_err(io_error)?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut end = 0;
        let (accepted, head_len) = loop {
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[end..]).map_err(io_error)?;
            if n == 0 {
                return Err(ClientError::Dropped);
            }
            end += n;
            let deflate = config.deflate.as_ref();
            let max_head = config.max_head_size;
            match parse_response_with(&buf[..end], &key, &config.protocols, deflate, max_head) {
                Ok(Status::Complete(accepted, head_len)) => break (accepted, head_len),
                Ok(Status::Partial) => {}
                Err(e) => return Err(ClientError::Handshake(e)),
            }
        };
        let tcp = stream.tcp();
        tcp.set_read_timeout(config.io_timeout)
            .and_then(|()| tcp.set_write_timeout(config.io_timeout))
            .map_err(ClientError::Io)?;
        let mut conn = Connection::client(config.limits.clone(), MaskKeys::new(os_random));
        let pool = match (&config.deflate, accepted.deflate) {
            (Some(settings), Some(n)) => {
                conn.rx.enable_deflate(n.server());
                conn.tx.enable_deflate(n.client());
                Pool::new(settings)
            }
            _ => Pool::default(),
        };
        Ok(Client {
            stream,
            conn,
            buf,
            start: head_len,
            end,
            out: Vec::new(),
            protocol: accepted.protocol,
            deflate: accepted.deflate,
            pool,
        })
    }

    /// permessage-deflate as the server agreed to it (`None`: not in use).
    pub fn deflate(&self) -> Option<Negotiated> {
        self.deflate
    }

    /// The sub-protocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The underlying socket (for timeouts, shutdown, addresses; under TLS, writing to it
    /// directly breaks the session).
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// The stream the URL asks for: TLS over `stream` for `wss://`.
    fn secure(
        stream: TcpStream,
        url: &WsUrl,
        config: &ClientConfig,
    ) -> Result<ClientStream, ClientError> {
        if !url.secure {
            return Ok(ClientStream::Plain(stream));
        }
        #[cfg(feature = "tls")]
        {
            let tls = match &config.tls {
                Some(tls) => tls.clone(),
                None => crate::tls::ClientTls::platform_shared().map_err(ClientError::TlsConfig)?,
            };
            let session = tls.connect(&url.host).map_err(ClientError::TlsConfig)?;
            Ok(ClientStream::Tls(Box::new(rustls::StreamOwned::new(
                session, stream,
            ))))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (stream, config);
            Err(ClientError::Url(UrlError::Scheme("wss".into())))
        }
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            let result = self.stream.write_all(&self.out);
            self.out.clear();
            result.map_err(io_error)?;
        }
        Ok(())
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(DataKind::Text, text.as_bytes())
    }

    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send(DataKind::Binary, bytes)
    }

    fn send(&mut self, kind: DataKind, payload: &[u8]) -> Result<(), ClientError> {
        self.conn
            .tx
            .send_with(kind, payload, &mut self.out, &mut self.pool)?;
        self.flush()
    }

    /// Sends one fragment of a message (`fin` on the last).
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), ClientError> {
        self.conn
            .tx
            .send_fragment(kind, payload, fin, &mut self.out)?;
        self.flush()
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.conn.tx.ping(payload, &mut self.out)?;
        self.flush()
    }

    /// Sends a close frame; keep calling [`Client::read`] until the server's close arrives.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        self.conn.tx.close(code, reason, &mut self.out)?;
        self.flush()
    }

    /// True when both close frames have been exchanged.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Blocks until the next event (copied out: this client is for scripts and tests; the
    /// event-loop drivers lend payloads instead). Pongs and the close echo are sent
    /// automatically. After the close handshake, returns `Err(Dropped)` once the server closes
    /// TCP.
    pub fn read(&mut self) -> Result<OwnedEvent, ClientError> {
        loop {
            let Client {
                conn,
                buf,
                start,
                end,
                out,
                stream,
                pool,
                ..
            } = self;
            let before = *start;
            let result = conn
                .rx
                .read_with(&mut buf[*start..*end], &mut conn.tx, out, pool);
            let (consumed, event, failure) = match result {
                Ok(Read { consumed, event }) => (consumed, event, None),
                Err(Failure { error, consumed }) => (consumed, None, Some(error)),
            };
            *start = before + consumed;
            if !out.is_empty() {
                let sent = stream.write_all(out);
                out.clear();
                sent.map_err(io_error)?;
            }
            if let Some(error) = failure {
                return Err(ClientError::Protocol(error));
            }
            if let Some(event) = event {
                return Ok(event.into());
            }
            if consumed > 0 {
                continue;
            }
            self.fill()?;
        }
    }

    /// Reads more bytes from the socket into the buffer.
    fn fill(&mut self) -> Result<(), ClientError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < READ_CHUNK / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < 4096 {
            self.buf.resize(self.buf.len() + READ_CHUNK, 0);
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(ClientError::Dropped),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            // After the peer's close a reset is just how some servers hang up.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && self.conn.rx.is_closed() => {
                Err(ClientError::Dropped)
            }
            Err(e) => Err(io_error(e)),
        }
    }
}
