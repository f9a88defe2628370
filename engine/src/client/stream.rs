//! [`ClientStream`]: the blocking client's byte stream, plain TCP for `ws://` or (feature `tls`)
//! a rustls client session over it for `wss://`.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;

/// A blocking client's connection.
pub(crate) enum ClientStream {
    Plain(TcpStream),
    /// The TLS handshake runs on the first write (rustls' `StreamOwned` completes it).
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// The socket under the stream.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => &t.sock,
        }
    }

    /// Runs the TLS handshake now (no-op for plain TCP), so that its failures surface as such.
    pub(crate) fn establish(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let ClientStream::Tls(t) = self {
            while t.conn.is_handshaking() {
                t.conn.complete_io(&mut t.sock)?;
            }
        }
        Ok(())
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => match t.read(buf) {
                // TCP ended without close_notify: an end all the same (the WebSocket close
                // handshake, not TLS, says whether the conversation was complete).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write_vectored(bufs),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            ClientStream::Tls(t) => t.flush(),
        }
    }
}

impl Drop for ClientStream {
    /// TLS says `close_notify` before the socket closes (best effort).
    fn drop(&mut self) {
        #[cfg(feature = "tls")]
        if let ClientStream::Tls(t) = self {
            if !t.conn.is_handshaking() {
                t.conn.send_close_notify();
                let _ = t.conn.complete_io(&mut t.sock);
            }
        }
    }
}
