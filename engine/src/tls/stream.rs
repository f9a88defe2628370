//! [`TlsStream`]: a rustls connection (server or client) over a non-blocking socket, read and
//! written like the socket itself, so the event loops treat both alike.
//!
//! The contract the loop relies on, the same as a plain socket's:
//! - `read` returns a short count only once the socket itself said `WouldBlock` or EOF, or
//!   returned less than it was asked for (on Linux an edge-triggered socket is then drained,
//!   the rule the loops already apply to plain sockets, which saves the read that would only
//!   say `EAGAIN`: one syscall per message at depth 1); `WouldBlock` only from the socket.
//!   Plaintext already decrypted is handed out first, and the socket is read only when rustls
//!   holds none, so rustls never buffers more than one read's worth.
//! - `write` takes bytes only while no ciphertext is waiting: if the socket still refuses what
//!   an earlier write encrypted, it says `WouldBlock` and the caller keeps its bytes in its own
//!   (bounded) backlog. So rustls holds at most [`MAX_WRITE`] plaintext's ciphertext.
//! - What rustls has to send on its own (handshake flights, alerts, tickets, `close_notify`) is
//!   written by [`TlsStream::flush_pending`], which the loop calls on every event.
//!
//! Idle, a connection holds the rustls state: keys, and a 4 KiB receive buffer that rustls
//! keeps between reads (it shrinks back to that once a record has been consumed).

use std::io::{self, IoSlice, Read, Write};

use rustls::Connection;

/// Most plaintext one `write` encrypts: four full records. Bounds the ciphertext rustls holds
/// beyond the caller's backlog.
pub(crate) const MAX_WRITE: usize = 64 << 10;

/// A TLS connection over a socket.
pub(crate) struct TlsStream<S> {
    pub(crate) sock: S,
    pub(crate) tls: Connection,
    /// The socket has reported EOF.
    eof: bool,
}

impl<S: Read + Write> TlsStream<S> {
    pub(crate) fn new(sock: S, tls: impl Into<Connection>) -> Self {
        TlsStream {
            sock,
            tls: tls.into(),
            eof: false,
        }
    }

    /// The TLS handshake is over (the application has been reached).
    pub(crate) fn is_established(&self) -> bool {
        !self.tls.is_handshaking()
    }

    /// Ciphertext is waiting for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes the ciphertext rustls holds. `WouldBlock` if the socket took not all of it.
    pub(crate) fn flush_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues `close_notify` and writes what the socket takes (best effort: the connection is
    /// ending either way).
    pub(crate) fn close_notify(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_pending();
    }

    /// Reads ciphertext into rustls and processes it. `Some(short)`: bytes came, and `short`
    /// says the socket returned less than rustls asked for; `None`: the socket had nothing.
    fn pull(&mut self) -> io::Result<Option<bool>> {
        let mut probe = Probe {
            sock: &mut self.sock,
            short: false,
        };
        match self.tls.read_tls(&mut probe) {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let short = probe.short;
        if let Err(e) = self.tls.process_new_packets() {
            // rustls has queued the alert that tells the peer why.
            let _ = self.flush_pending();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Handshake flights (and tickets) go out at once; a full socket raises a writable edge.
        match self.flush_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(Some(short)),
        }
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        // The last socket read returned less than asked: drained (Linux, edge-triggered).
        let mut drained = false;
        while filled < buf.len() {
            match self.tls.reader().read(&mut buf[filled..]) {
                // The peer's close_notify: a clean end of the stream.
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP ended without close_notify: an end all the same (browsers do it).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            if self.eof || (drained && filled > 0) {
                return Ok(filled);
            }
            match self.pull() {
                Ok(Some(short)) => drained = cfg!(target_os = "linux") && short,
                Ok(None) if filled > 0 => return Ok(filled),
                Ok(None) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush_pending()?;
        let mut taken = [IoSlice::new(&[]); 16];
        let mut count = 0;
        let mut total = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            if count == taken.len() || total == MAX_WRITE {
                break;
            }
            let n = b.len().min(MAX_WRITE - total);
            taken[count] = IoSlice::new(&b[..n]);
            count += 1;
            total += n;
        }
        if total == 0 {
            return Ok(0);
        }
        let n = self.tls.writer().write_vectored(&taken[..count])?;
        if n == 0 {
            // rustls' own limit (plaintext queued before the handshake ended).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}

/// The socket as rustls reads it, noting whether a read returned less than was asked for.
struct Probe<'a, S> {
    sock: &'a mut S,
    short: bool,
}

impl<S: Read> Read for Probe<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// Says what went wrong in words an operator can act on.
pub(crate) fn describe(e: &rustls::Error) -> &'static str {
    use rustls::{Error, InvalidMessage};
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "not TLS (plain HTTP or another protocol sent to the TLS port?)"
        }
        Error::InvalidMessage(_) => "malformed TLS message",
        Error::NoApplicationProtocol => "no ALPN protocol in common",
        Error::AlertReceived(_) => "the client sent an alert (it does not trust the certificate?)",
        Error::PeerIncompatible(_) => "the client offers nothing this server supports",
        Error::PeerMisbehaved(_) => "the client broke the TLS protocol",
        _ => "TLS failure",
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// What an idle TLS connection holds besides its slab slot: the box with the rustls state
    /// (its heap parts, chiefly the 4 KiB receive buffer and the record keys, come on top;
    /// benches/TLS.md has the measured total).
    #[test]
    fn the_tls_state_stays_boxed_and_small() {
        use std::mem::size_of;
        let boxed = size_of::<TlsStream<mio::net::TcpStream>>();
        let transport = size_of::<crate::driver::transport::Transport>();
        eprintln!("TlsStream {boxed} B (boxed), Transport {transport} B inline");
        assert!(transport <= 16, "Transport is {transport} bytes inline");
        assert!(boxed <= 1536, "TlsStream is {boxed} bytes");
    }
}
