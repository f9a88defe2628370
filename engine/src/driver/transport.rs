//! [`Transport`]: what a connection of the server's or the client's event loop reads and writes,
//! a plain socket or (feature `tls`) a TLS session over one. The loops use both alike; the few
//! places where TLS differs (pending ciphertext, `close_notify`, failures to log) are methods
//! here that are no-ops for plain TCP.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

#[cfg(feature = "tls")]
use crate::tls::stream::TlsStream;

/// A connection's byte stream.
pub(crate) enum Transport {
    Plain(TcpStream),
    /// Boxed: the rustls state is about a kilobyte, and plain connections should not pay it.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer_addr().ok())
            .field("tls", &self.is_tls())
            .finish()
    }
}

impl Transport {
    /// The socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => &t.sock,
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain(_))
    }

    /// TLS: the handshake has not finished yet (always false for plain TCP).
    pub fn is_tls_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => !t.is_established(),
        }
    }

    /// Bytes are written but still wait for the socket (TLS records; never for plain TCP,
    /// whose unwritten bytes stay in the caller's backlog).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.wants_write(),
        }
    }

    /// Writes what is pending (see [`wants_write`](Self::wants_write)); `WouldBlock` is no
    /// error here, a writable edge comes when the socket has room.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => match t.flush_pending() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            },
        }
    }

    /// Ends our sending side: TLS sends `close_notify` first, then TCP sends FIN.
    pub fn shutdown_write(&mut self) {
        #[cfg(feature = "tls")]
        if let Transport::Tls(t) = self {
            t.close_notify();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }

    /// Before the socket is dropped: TLS says `close_notify` (best effort).
    pub fn close(&mut self) {
        #[cfg(feature = "tls")]
        if let Transport::Tls(t) = self {
            if t.is_established() {
                t.close_notify();
            }
        }
    }

    /// A failure worth its own log line: TLS went wrong (and how, in words).
    pub fn tls_failure(e: &io::Error) -> Option<(&'static str, String)> {
        #[cfg(feature = "tls")]
        if let Some(failure) = crate::tls::tls_failure(e) {
            return Some((crate::tls::stream::describe(failure), failure.to_string()));
        }
        let _ = e;
        None
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.flush(),
        }
    }
}

impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.sock_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.sock_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.sock_mut().deregister(registry)
    }
}

impl Transport {
    fn sock_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => &mut t.sock,
        }
    }
}
