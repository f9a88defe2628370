//! STOMP over plain TCP on a small mio loop: the same shape as the engine's client loop
//! (edge-triggered, one shared read buffer, a short read ends the reading, output corked per
//! turn and written once) without the WebSocket layer.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{Bench, Driver, Peer, STEP};

/// Reads of one connection per turn before the others get their go.
const READS_PER_TURN: usize = 16;

struct Conn {
    stream: TcpStream,
    peer: Peer,
    connected: bool,
    /// Written by the bench, not yet taken by the socket.
    out: Vec<u8>,
    /// Left unread while the bench stalls it (in `Loop::parked`).
    parked: bool,
    /// The peer hung up (or the socket failed): read to the end, since a short read may be
    /// followed by the end of the stream with no new event to tell.
    hup: bool,
}

struct Loop {
    poll: Poll,
    /// The publisher's server.
    addr: SocketAddr,
    /// Subscriber `i` connects to the `i % n`th.
    sub_addrs: Vec<SocketAddr>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    publisher: Option<usize>,
    /// Connections with output to write at the end of the turn.
    dirty: Vec<usize>,
    /// Connections with more to read than one turn allowed.
    pending: Vec<usize>,
    /// Connections left unread while the bench stalls them (`--stall`): read again after.
    parked: Vec<usize>,
}

impl Loop {
    fn remove(&mut self, key: usize) -> Option<Conn> {
        let mut conn = self.conns.get_mut(key)?.take()?;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(key);
        self.open -= 1;
        if self.publisher == Some(key) {
            self.publisher = None;
        }
        Some(conn)
    }

    /// Writes what `key` has waiting; false when the connection failed.
    fn flush(&mut self, key: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if !conn.connected {
            return Ok(());
        }
        let mut written = 0;
        while written < conn.out.len() {
            match conn.stream.write(&conn.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        conn.out.drain(..written);
        Ok(())
    }

    fn fail(&mut self, bench: &mut Bench, key: usize, error: Option<String>) {
        if let Some(conn) = self.remove(key) {
            if let Some(e) = error {
                bench.failed(&conn.peer, &e);
            }
            if conn.connected {
                bench.closed(&conn.peer);
            }
        }
    }

    /// Serves one readiness event (or a connection with reads left over).
    fn serve(&mut self, bench: &mut Bench, key: usize, writable: bool, buf: &mut [u8]) {
        let Some(Some(conn)) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.connected {
            if !writable {
                return;
            }
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    return self.fail(bench, key, Some(format!("connect: {e}")))
                }
            }
            match conn.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(bench, key, Some(format!("connect: {e}"))),
            }
            conn.connected = true;
            let _ = conn.stream.set_nodelay(true);
            bench.opened(&mut conn.peer, &mut conn.out);
            self.dirty.push(key);
            return;
        }
        if bench.stalls(&conn.peer) {
            if !conn.parked {
                conn.parked = true;
                self.parked.push(key);
            }
            return;
        }
        let mut reads = 0;
        loop {
            if reads == READS_PER_TURN {
                self.pending.push(key);
                break;
            }
            reads += 1;
            let had = conn.out.len();
            match conn.stream.read(buf) {
                Ok(0) => return self.fail(bench, key, None),
                Ok(n) => {
                    bench.data(&mut conn.peer, &buf[..n], Instant::now(), &mut conn.out);
                    if conn.out.len() > had && had == 0 {
                        self.dirty.push(key);
                    }
                    // On Linux a short read means the socket is empty: epoll signals again for
                    // anything that arrives later (but not for a FIN that came with the data).
                    if n < buf.len() && !conn.hup {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(bench, key, Some(format!("read: {e}"))),
            }
        }
    }
}

impl Driver for Loop {
    fn connect(&mut self, peer: Peer) -> Result<(), String> {
        let addr = if peer.is_publisher() {
            self.addr
        } else {
            self.sub_addrs[peer.index % self.sub_addrs.len()]
        };
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(key);
            return Err(e.to_string());
        }
        if peer.is_publisher() {
            self.publisher = Some(key);
        }
        self.conns[key] = Some(Conn {
            stream,
            peer,
            connected: false,
            out: Vec::new(),
            parked: false,
            hup: false,
        });
        self.open += 1;
        Ok(())
    }

    fn send_to_publisher(&mut self, frames: &[u8]) -> bool {
        let Some(key) = self.publisher else {
            return false;
        };
        let Some(Some(conn)) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.out.is_empty() {
            self.dirty.push(key);
        }
        conn.out.extend_from_slice(frames);
        true
    }

    fn close_all(&mut self, each: &mut dyn FnMut(&Peer)) {
        for key in 0..self.conns.len() {
            if let Some(conn) = self.remove(key) {
                each(&conn.peer);
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
    }

    fn len(&self) -> usize {
        self.open
    }
}

pub fn run(bench: &mut Bench, deadline: Instant) -> Result<(), String> {
    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    if let Some(team) = bench.leads_team() {
        // No connection's key is usize::MAX: `serve` ignores the waker's events.
        let waker = mio::Waker::new(poll.registry(), Token(usize::MAX))
            .map_err(|e| format!("poll waker: {e}"))?;
        team.set_waker(Box::new(move || {
            let _ = waker.wake();
        }));
    }
    let mut lp = Loop {
        poll,
        addr: bench.s.addr,
        sub_addrs: bench.s.sub_targets.iter().map(|&(_, a)| a).collect(),
        conns: Vec::new(),
        free: Vec::new(),
        open: 0,
        publisher: None,
        dirty: Vec::new(),
        pending: Vec::new(),
        parked: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if !bench.step(now, &mut lp) {
            break;
        }
        for key in std::mem::take(&mut lp.dirty) {
            if let Err(e) = lp.flush(key) {
                lp.fail(bench, key, Some(format!("write: {e}")));
            }
        }
        if !lp.parked.is_empty() && !bench.stalling() {
            // Edge-triggered: what arrived while parked is read without a new event.
            for key in std::mem::take(&mut lp.parked) {
                if let Some(Some(c)) = lp.conns.get_mut(key) {
                    // Whatever came while it was parked, the end of the stream included.
                    c.parked = false;
                    c.hup = true;
                    lp.pending.push(key);
                }
            }
        }
        let timeout = if lp.pending.is_empty() {
            STEP.min(deadline - now)
        } else {
            std::time::Duration::ZERO
        };
        match lp.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for event in events.iter() {
            let key = event.token().0;
            let writable = event.is_writable() || event.is_error();
            if let Some(Some(c)) = lp.conns.get_mut(key) {
                if writable && c.connected && !c.out.is_empty() {
                    lp.dirty.push(key);
                }
                c.hup |= event.is_read_closed() || event.is_error();
            }
            if event.is_readable() || event.is_read_closed() || writable {
                lp.serve(bench, key, writable, &mut buf);
            }
        }
        for key in std::mem::take(&mut lp.pending) {
            lp.serve(bench, key, false, &mut buf);
        }
        for key in std::mem::take(&mut lp.dirty) {
            if let Err(e) = lp.flush(key) {
                lp.fail(bench, key, Some(format!("write: {e}")));
            }
        }
    }
    Ok(())
}
