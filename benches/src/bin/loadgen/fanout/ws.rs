//! STOMP over WebSocket on the engine's client event loop: one STOMP frame per WebSocket text
//! message out; whatever arrives is scanned as a stream (a message may hold several frames).

use std::time::Instant;

use sockeye::client::{
    ClientConfig, ClientConn, ClientError, ClientHandler, ClientId, EventLoop, LoopConfig, Target,
};
use sockeye::deflate::DeflateConfig;
use sockeye::server::{Message, SendStatus};

use super::{Bench, Driver, Peer, STEP};

struct Side<'b> {
    bench: &'b mut Bench,
    out: Vec<u8>,
    /// One clock reading per connection per loop turn (the messages of one read arrive
    /// together): the connection, the turn's start, and the reading.
    clock: Option<(ClientId, Instant, Instant)>,
}

impl Side<'_> {
    fn now(&mut self, conn: &ClientConn<'_, Peer>) -> Instant {
        let key = (conn.id(), conn.turn_started());
        match self.clock {
            Some((id, turn, at)) if (id, turn) == key => at,
            _ => {
                let at = Instant::now();
                self.clock = Some((key.0, key.1, at));
                at
            }
        }
    }
}

/// Sends concatenated STOMP frames, one WebSocket text message each (ours never hold a NUL
/// before their end).
fn send_frames(conn: &mut ClientConn<'_, Peer>, mut frames: &[u8]) -> bool {
    let mut ok = true;
    while !frames.is_empty() {
        let end = frames
            .iter()
            .position(|&b| b == 0)
            .map_or(frames.len(), |n| n + 1);
        let (frame, rest) = frames.split_at(end);
        frames = rest;
        let sent = match std::str::from_utf8(frame) {
            Ok(text) => conn.send(Message::Text(text)),
            Err(_) => conn.send(Message::Binary(frame)),
        };
        ok &= matches!(sent, Ok(SendStatus::Written | SendStatus::Queued));
    }
    ok
}

impl ClientHandler for Side<'_> {
    type Data = Peer;

    fn on_open(&mut self, conn: &mut ClientConn<'_, Peer>) {
        if self.bench.s.deflate && !conn.deflates() {
            eprintln!(
                "error: connection {} opened without permessage-deflate",
                conn.id()
            );
            self.bench.conn_errors += 1;
        }
        self.out.clear();
        self.bench.opened(conn.data_mut(), &mut self.out);
        if !send_frames(conn, &self.out) {
            self.bench.send_errors += 1;
        }
    }

    fn on_message(&mut self, conn: &mut ClientConn<'_, Peer>, message: Message<'_>) {
        let bytes = match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        };
        let now = self.now(conn);
        self.out.clear();
        self.bench.data(conn.data_mut(), bytes, now, &mut self.out);
        if !self.out.is_empty() && !send_frames(conn, &self.out) {
            self.bench.send_errors += 1;
        }
    }

    fn on_error(&mut self, _id: ClientId, data: &mut Peer, error: &ClientError) {
        self.bench.failed(data, &error.to_string());
    }

    fn on_close(&mut self, _id: ClientId, data: &mut Peer, _code: u16, _reason: &str) {
        self.bench.closed(data);
    }
}

struct Loop<'a> {
    lp: &'a mut EventLoop<Peer>,
    /// The publisher's server.
    target: &'a Target,
    /// Subscriber `i` connects to the `i % n`th.
    subs: &'a [Target],
    publisher: &'a mut Option<ClientId>,
}

impl Driver for Loop<'_> {
    fn connect(&mut self, peer: Peer) -> Result<(), String> {
        let publisher = peer.is_publisher();
        let target = if publisher {
            self.target
        } else {
            &self.subs[peer.index % self.subs.len()]
        };
        let id = self.lp.connect(target, peer).map_err(|e| e.to_string())?;
        if publisher {
            *self.publisher = Some(id);
        }
        Ok(())
    }

    fn send_to_publisher(&mut self, frames: &[u8]) -> bool {
        match self.publisher.and_then(|id| self.lp.conn(id)) {
            Some(mut conn) => send_frames(&mut conn, frames),
            None => false,
        }
    }

    fn close_all(&mut self, each: &mut dyn FnMut(&Peer)) {
        self.lp.each_open(|c| {
            each(c.data());
            let _ = c.close(1000, "done");
        });
    }

    fn len(&self) -> usize {
        self.lp.len()
    }
}

pub fn run(bench: &mut Bench, deadline: Instant) -> Result<(), String> {
    let target = Target::from_url(&bench.s.url).map_err(|e| format!("{}: {e}", bench.s.url))?;
    let subs = bench
        .s
        .sub_targets
        .iter()
        .map(|(url, _)| Target::from_url(url).map_err(|e| format!("{url}: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    let config = LoopConfig {
        client: ClientConfig {
            protocols: vec!["v12.stomp".into()],
            deflate: bench.s.deflate.then(DeflateConfig::default),
            ..ClientConfig::default()
        },
        ..LoopConfig::default()
    };
    let mut lp = EventLoop::new(config).map_err(|e| format!("event loop: {e}"))?;
    if let Some(team) = bench.leads_team() {
        let waker = lp.waker().map_err(|e| format!("event loop waker: {e}"))?;
        team.set_waker(Box::new(move || {
            let _ = waker.wake();
        }));
    }
    let mut publisher = None;
    let mut side = Side {
        bench,
        out: Vec::new(),
        clock: None,
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut driver = Loop {
            lp: &mut lp,
            target: &target,
            subs: &subs,
            publisher: &mut publisher,
        };
        if !side.bench.step(now, &mut driver) {
            break;
        }
        lp.turn(&mut side, Some(STEP.min(deadline - now)))
            .map_err(|e| format!("event loop: {e}"))?;
    }
    Ok(())
}
