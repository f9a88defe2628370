//! The owed-drain rule against a scripted socket, without timing: every short script of
//! partial writes and `WouldBlock` (repeated until the transfer ends), with and without sends
//! from "other threads" and pings in between, through every path bytes take (corked, shared,
//! written through, flushed early at the cork limit, refused at the cap). The producer pauses
//! on `Queued` and `Dropped` and resumes only in `on_drain`, as `Handler::on_drain` recommends;
//! the loop is modelled as the real ones are: it comes back to a connection only on a writable
//! edge (which needs a non-empty backlog: the last write would have blocked) or when
//! [`flush_and_drain`] says a drain is still due. A producer that is paused with nothing queued
//! and no drain due would wait forever; the test fails on that state.

use super::*;

/// One answer of the scripted socket to a write.
#[derive(Clone, Copy, Debug)]
enum Step {
    Block,
    Take(usize),
}

/// A socket that answers writes from a script, over and over.
struct Script {
    steps: Vec<Step>,
    pos: usize,
    got: Vec<u8>,
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let step = self.steps[self.pos % self.steps.len()];
        self.pos += 1;
        let Step::Take(room) = step else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            self.got.extend_from_slice(&b[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Message sizes, cycled: small, written through, over the cork limit, tiny.
const SIZES: [usize; 4] = [100, 17_000, 70_000, 5];
const MESSAGES: usize = 8;
const CAP: usize = 40_000;
/// Loop visits during which other sends and pings come in.
const POKES_UNTIL: usize = 200;

/// A connection with a paced producer: `next` is the next message to send.
struct Conn {
    cork: Cork,
    sock: Script,
    backlog: Backlog,
    next: usize,
    paused: bool,
    drains: usize,
    /// Every byte accepted for sending, in order.
    expected: Vec<u8>,
}

fn message(i: usize) -> (Vec<u8>, Vec<u8>) {
    let head = vec![b'<', i as u8];
    let body = vec![i as u8 ^ 0x5a; SIZES[i % SIZES.len()]];
    (head, body)
}

impl Conn {
    /// Sends until the send path pushes back (a `Dropped` message is sent again later).
    fn pump(&mut self) {
        self.paused = false;
        while self.next < MESSAGES {
            let (head, body) = message(self.next);
            let payload = match self.next % 3 {
                0 => Payload::Copied(&body),
                1 => Payload::Shared(Bytes::from(body.clone())),
                _ => Payload::Parts(&body[..1], Bytes::copy_from_slice(&body[1..])),
            };
            let status = queue_frame(
                &mut self.cork,
                &mut self.sock,
                &mut self.backlog,
                CAP,
                &head,
                payload,
            );
            if status != SendStatus::Dropped {
                self.expected.extend_from_slice(&head);
                self.expected.extend_from_slice(&body);
                self.next += 1;
            }
            if status != SendStatus::Written {
                self.paused = true;
                return;
            }
        }
    }

    /// What another thread's post or a timer adds outside the producer: a small message or
    /// a ping-sized control frame, neither of which resumes the producer.
    fn poke(&mut self, ping: bool) {
        if ping {
            self.cork.frame(b"P", b"", None);
            self.expected.extend_from_slice(b"P");
        } else {
            let status = queue_frame(
                &mut self.cork,
                &mut self.sock,
                &mut self.backlog,
                CAP,
                b"C",
                Payload::Copied(b"cmd"),
            );
            if status != SendStatus::Dropped {
                self.expected.extend_from_slice(b"Ccmd");
            }
        }
    }
}

impl Drains for Conn {
    fn flush(&mut self) -> io::Result<()> {
        self.cork.flush_into(&mut self.sock, &mut self.backlog)
    }

    fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    fn backlog_mut(&mut self) -> &mut Backlog {
        &mut self.backlog
    }

    fn on_drain(&mut self) {
        self.drains += 1;
        self.pump();
    }
}

/// Runs one transfer; `poke_every`: every how many loop visits another thread sends or a timer
/// pings (0: never). Panics on a stall, with what the socket did.
fn transfer(steps: &[Step], poke_every: usize) {
    let mut c = Conn {
        cork: Cork::default(),
        sock: Script {
            steps: steps.to_vec(),
            pos: 0,
            got: Vec::new(),
        },
        backlog: Backlog::default(),
        next: 0,
        paused: false,
        drains: 0,
        expected: Vec::new(),
    };
    // on_open: the producer starts inside a callback; the loop flushes after it.
    c.pump();
    let mut again = flush_and_drain(&mut c).expect("scripted writes do not fail");
    let mut visits = 0;
    while c.next < MESSAGES || !c.backlog.is_empty() {
        visits += 1;
        assert!(
            visits < 1_000_000,
            "no progress with script {steps:?}: message {}, {} queued, {} corked, {} out",
            c.next,
            c.backlog.len(),
            c.cork.len(),
            c.sock.got.len()
        );
        let edge = !c.backlog.is_empty();
        if !edge && !again {
            panic!(
                "stalled: producer paused at message {} of {MESSAGES}, nothing queued, no \
                 drain due (script {steps:?}, pokes every {poke_every}, {} drains)",
                c.next, c.drains
            );
        }
        // Pokes stop after a while: a steady trickle of other sends could keep the queue from
        // ever emptying, and a message over the cap waits for an empty queue.
        if poke_every > 0 && visits % poke_every == 0 && visits < POKES_UNTIL {
            c.poke(visits % (2 * poke_every) == 0);
        }
        again = flush_and_drain(&mut c).expect("scripted writes do not fail");
    }
    assert!(!c.paused || c.next == MESSAGES, "the producer finished");
    assert_eq!(c.sock.got.len(), c.expected.len(), "script {steps:?}");
    assert!(
        c.sock.got == c.expected,
        "bytes out of order: script {steps:?}"
    );
}

/// Every script of one to five steps over {block, 7 bytes, 3,000 bytes, 40,000 bytes} that
/// ever takes a byte.
fn scripts() -> Vec<Vec<Step>> {
    const ALPHABET: [Step; 4] = [
        Step::Block,
        Step::Take(7),
        Step::Take(3_000),
        Step::Take(40_000),
    ];
    let mut all = Vec::new();
    for len in 1..=5u32 {
        for mut n in 0..4usize.pow(len) {
            let mut script = Vec::new();
            for _ in 0..len {
                script.push(ALPHABET[n % 4]);
                n /= 4;
            }
            if script.iter().any(|s| matches!(s, Step::Take(_))) {
                all.push(script);
            }
        }
    }
    all
}

#[test]
fn a_producer_pausing_on_queued_always_finishes() {
    let scripts = scripts();
    assert_eq!(scripts.len(), 4 + 16 + 64 + 256 + 1024 - 5);
    for script in &scripts {
        for poke_every in [0, 1, 3] {
            transfer(script, poke_every);
        }
    }
}

#[test]
fn one_drain_per_debt_however_many_queued_sends() {
    let mut backlog = Backlog::default();
    assert_eq!(backlog.accepted(), SendStatus::Written);
    assert!(!backlog.take_drain(), "Written owes nothing");
    backlog.push_tail(b"waiting", 0);
    assert_eq!(backlog.accepted(), SendStatus::Queued);
    assert_eq!(backlog.accepted(), SendStatus::Queued);
    assert_eq!(backlog.refused(), SendStatus::Dropped);
    assert!(!backlog.take_drain(), "not while bytes wait");
    let mut sink = Vec::new();
    backlog.flush(&mut sink).unwrap();
    assert!(backlog.take_drain(), "due once the backlog is empty");
    assert!(!backlog.take_drain(), "and paid once");
}
