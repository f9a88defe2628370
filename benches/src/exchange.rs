//! A whole client↔server exchange through the sans-IO core, in memory.
//!
//! Each [`Peer`] drives its [`Connection`] the way the mio worker does (see the driver contract
//! in `sockeye::connection`): bytes arrive in reads of at most [`READ_BUFFER_SIZE`] bytes, put
//! after the unconsumed tail of the previous read; `read` is called until it returns
//! `consumed == 0` with no event; the tail is kept for the next read. So large messages that
//! straddle reads take the assembling path, exactly as on a socket. Nothing here touches the
//! operating system.

use std::sync::atomic::{AtomicU64, Ordering};

use sockeye::connection::MaskKeys;
use sockeye::{Connection, DataKind, Event, Limits, ProtocolError, Read, Sender};

/// The size of a read, as the server's default `read_buffer_size` (256 KiB).
pub const READ_BUFFER_SIZE: usize = 256 << 10;

/// One end of the exchange: a connection, its read buffer and the unconsumed tail.
#[derive(Debug)]
pub struct Peer {
    pub conn: Connection,
    read_buf: Vec<u8>,
    stash: Vec<u8>,
}

/// Fills the client's key pool from a xorshift generator: the benchmark measures the core, not
/// the operating system's randomness (which the pool asks once per 64 frames anyway).
fn fill_keys(pool: &mut [u8]) {
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.load(Ordering::Relaxed);
    for chunk in pool.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    STATE.store(x, Ordering::Relaxed);
}

impl Peer {
    pub fn server() -> Peer {
        Peer::new(Connection::server(Limits::default()))
    }

    pub fn client() -> Peer {
        Peer::new(Connection::client(
            Limits::default(),
            MaskKeys::new(fill_keys),
        ))
    }

    fn new(conn: Connection) -> Peer {
        Peer {
            conn,
            read_buf: vec![0; READ_BUFFER_SIZE],
            stash: Vec::new(),
        }
    }

    /// Bytes left over from the last read (an incomplete frame header or control frame).
    pub fn tail(&self) -> &[u8] {
        &self.stash
    }

    /// Receives `input` as a sequence of reads, calling `on_event` for every event with the
    /// sender and `out`, where the replies (automatic and the callback's) are written.
    pub fn receive<F>(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        mut on_event: F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>, &mut Sender, &mut Vec<u8>),
    {
        while !input.is_empty() {
            // As the worker: the tail goes first, the read fills the room after it.
            let carry = self.stash.len();
            let n = (self.read_buf.len() - carry).min(input.len());
            self.read_buf[..carry].copy_from_slice(&self.stash);
            self.read_buf[carry..carry + n].copy_from_slice(&input[..n]);
            input = &input[n..];
            self.stash.clear();
            let Connection { rx, tx } = &mut self.conn;
            let data = &mut self.read_buf[..carry + n];
            let mut pos = 0;
            loop {
                match rx.read(&mut data[pos..], tx, out) {
                    Ok(Read { consumed, event }) => {
                        pos += consumed;
                        match event {
                            Some(event) => on_event(event, tx, out),
                            None if consumed == 0 => break,
                            None => {}
                        }
                    }
                    Err(failure) => return Err(failure.error),
                }
            }
            self.stash.extend_from_slice(&data[pos..]);
        }
        Ok(())
    }
}

/// What the client got back in one [`Exchange::round`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echoed {
    pub messages: usize,
    pub bytes: usize,
}

/// A client and a server connected by two in-memory byte streams.
#[derive(Debug)]
pub struct Exchange {
    pub client: Peer,
    pub server: Peer,
    /// Client to server.
    c2s: Vec<u8>,
    /// Server to client.
    s2c: Vec<u8>,
    /// The client's automatic replies (none are expected).
    client_out: Vec<u8>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            client: Peer::client(),
            server: Peer::server(),
            c2s: Vec::new(),
            s2c: Vec::new(),
            client_out: Vec::new(),
        }
    }

    /// The client sends `payload` `count` times; the server reads them and echoes each with
    /// its sender; the client reads the echoes. Panics on any protocol failure.
    pub fn round(&mut self, kind: DataKind, payload: &[u8], count: usize) -> Echoed {
        self.c2s.clear();
        self.s2c.clear();
        self.client_out.clear();
        for _ in 0..count {
            self.client
                .conn
                .tx
                .send(kind, payload, &mut self.c2s)
                .expect("client can send");
        }
        self.server
            .receive(&self.c2s, &mut self.s2c, |event, tx, out| {
                let sent = match event {
                    Event::Text(text) => tx.send(DataKind::Text, text.as_bytes(), out),
                    Event::Binary(bytes) => tx.send(DataKind::Binary, bytes, out),
                    _ => Ok(()),
                };
                sent.expect("server can echo");
            })
            .expect("server reads the client's frames");
        let mut echoed = Echoed {
            messages: 0,
            bytes: 0,
        };
        self.client
            .receive(&self.s2c, &mut self.client_out, |event, _, _| match event {
                Event::Text(text) => {
                    echoed.messages += 1;
                    echoed.bytes += text.len();
                }
                Event::Binary(bytes) => {
                    echoed.messages += 1;
                    echoed.bytes += bytes.len();
                }
                _ => {}
            })
            .expect("client reads the echoes");
        echoed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_comes_back_whole() {
        let mut ex = Exchange::new();
        for (kind, len, count) in [
            (DataKind::Text, 16, 1000),
            (DataKind::Binary, 1 << 10, 300),
            (DataKind::Binary, 64 << 10, 20),
            (DataKind::Binary, 300 << 10, 3),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            for _ in 0..2 {
                let echoed = ex.round(kind, &payload, count);
                assert_eq!(
                    echoed,
                    Echoed {
                        messages: count,
                        bytes: count * len
                    },
                    "{len} B"
                );
                assert!(ex.client.tail().is_empty() && ex.server.tail().is_empty());
                assert!(ex.client_out.is_empty(), "the client wrote replies");
            }
        }
    }

    #[test]
    fn echoes_match_what_was_sent() {
        let mut client = Peer::client();
        let mut server = Peer::server();
        let payloads: Vec<Vec<u8>> = (0..50usize)
            .map(|i| (0..i * 4099).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for p in &payloads {
            client.conn.tx.send(DataKind::Binary, p, &mut wire).unwrap();
        }
        // The client masked what it sent: the bytes on the wire differ from the payloads.
        assert!(!wire.windows(4099).any(|w| w == &payloads[1][..]));
        let mut echoes = Vec::new();
        server
            .receive(&wire, &mut echoes, |event, tx, out| {
                let Event::Binary(b) = event else {
                    panic!("{event:?}")
                };
                tx.send(DataKind::Binary, b, out).unwrap();
            })
            .unwrap();
        let mut got = Vec::new();
        client
            .receive(&echoes, &mut Vec::new(), |event, _, _| {
                let Event::Binary(b) = event else {
                    panic!("{event:?}")
                };
                got.push(b.to_vec());
            })
            .unwrap();
        assert_eq!(got, payloads);
    }

    #[test]
    fn a_protocol_error_is_reported() {
        let mut server = Peer::server();
        // An unmasked frame from a client.
        let r = server.receive(b"\x82\x01x", &mut Vec::new(), |_, _, _| {});
        assert_eq!(r, Err(ProtocolError::UnmaskedFrame));
    }
}
