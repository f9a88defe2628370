//! Worker tasks: state kept per worker, reached from any thread ([`Workers::post`] and
//! [`Handler::on_task`]), and a session held back from afar ([`SessionHandle::hold_until`]).
//! Real sockets on loopback; every wait bounded.

mod common;

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use sockeye::client::OwnedEvent;
use sockeye::handshake::Request;
use sockeye::server::{
    Gate, Handler, Message, Rejection, ServerConfig, Session, SessionHandle, Task, TaskOut,
    Upgrading, Workers,
};
use sockeye::DataKind;

/// Each worker keeps its own sessions. A text `all:X` from any of them posts `X` to every
/// worker as a task, and each worker writes it to its own sessions.
struct PerWorker {
    workers: Arc<Mutex<Option<Workers>>>,
    mine: Vec<SessionHandle>,
    opened: Sender<(u64, Option<usize>)>,
}

impl Handler for PerWorker {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_open(&mut self, session: &mut Session<'_, ()>) {
        self.mine.push(session.handle());
        let _ = self.opened.send((session.id(), Workers::current()));
    }

    fn on_message(&mut self, _session: &mut Session<'_, ()>, message: Message<'_>) {
        let Message::Text(text) = message else { return };
        let Some(x) = text.strip_prefix("all:") else {
            return;
        };
        let workers = self.workers.lock().unwrap().clone().expect("workers set");
        for index in 0..workers.len() {
            workers
                .post(index, Box::new(x.to_owned()), x.len())
                .expect("post a task");
        }
    }

    fn on_task(&mut self, task: Task, out: &mut TaskOut<'_>) {
        let Ok(text) = task.downcast::<String>() else {
            return;
        };
        let payload = Bytes::from(*text);
        self.mine.retain(|h| {
            out.send_parts(h, DataKind::Text, Bytes::new(), payload.clone(), true)
                .is_ok()
        });
    }

    fn on_close(&mut self, session: &mut Session<'_, ()>, _code: u16, _reason: &str) {
        let id = session.id();
        self.mine.retain(|h| h.id() != id);
    }
}

fn texts(client: &mut sockeye::client::Client, n: usize, what: &str) -> Vec<String> {
    (0..n)
        .map(|_| match read_data(client, what) {
            OwnedEvent::Text(t) => t,
            other => panic!("expected text ({what}), got {other:?}"),
        })
        .collect()
}

#[test]
fn a_task_reaches_every_worker_and_each_writes_to_its_own_sessions_in_order() {
    let (opened_tx, opened) = mpsc::channel();
    let opened_tx = Mutex::new(opened_tx);
    let workers = Arc::new(Mutex::new(None));
    let shared = workers.clone();
    let config = ServerConfig {
        workers: 3,
        ..test_config()
    };
    let server = TestServer::start(config, move || PerWorker {
        workers: shared.clone(),
        mine: Vec::new(),
        opened: opened_tx.lock().unwrap().clone(),
    });
    let running = server.take();
    *workers.lock().unwrap() = Some(running.workers());
    assert_eq!(running.workers().len(), 3);
    assert_eq!(Workers::current(), None, "the test thread is no worker");
    let url = format!("ws://{}/", running.local_addr());
    let mut clients: Vec<_> = (0..9).map(|_| client(&url)).collect();
    let mut on = Vec::new();
    for _ in 0..9 {
        let (_, worker) = recv(&opened, "a session opening");
        on.push(worker.expect("on_open runs on a worker thread"));
    }
    on.sort_unstable();
    on.dedup();
    eprintln!("sessions opened on workers {on:?}");
    let sent: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    for m in &sent {
        clients[4].send_text(&format!("all:{m}")).expect("send");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let got = texts(c, sent.len(), &format!("the 50 messages at client {i}"));
        assert_eq!(
            got, sent,
            "client {i}: every message once, in the order sent"
        );
    }
    // From a thread that is no worker: the same path.
    let handle = running.workers();
    for index in 0..handle.len() {
        handle
            .post(index, Box::new("from afar".to_owned()), 9)
            .expect("post from the test thread");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            texts(c, 1, &format!("the task from afar at client {i}")),
            ["from afar"]
        );
    }
    for c in &mut clients {
        close_client(c);
    }
    bounded_shutdown(running, Duration::from_secs(10)).expect("clean shutdown");
}

#[test]
fn a_task_to_a_worker_that_does_not_run_is_refused() {
    let server =
        sockeye::server::Server::bind("127.0.0.1:0".parse().unwrap(), test_config()).expect("bind");
    let workers = server.workers();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        workers.post(0, Box::new(()), 0),
        Err(sockeye::server::PostError::Stopped),
        "before spawn there is nobody to run it"
    );
    let running = server
        .spawn(|| Reporter {
            handles: None,
            seen: None,
        })
        .expect("spawn");
    assert_eq!(
        running.workers().post(7, Box::new(()), 0),
        Err(sockeye::server::PostError::Stopped),
        "no worker 7"
    );
    bounded_shutdown(running, Duration::from_secs(10)).expect("clean shutdown");
}

/// Reports each session's handle when it opens and each text it receives.
struct Reporter {
    handles: Option<Sender<SessionHandle>>,
    seen: Option<Sender<String>>,
}

impl Handler for Reporter {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_open(&mut self, session: &mut Session<'_, ()>) {
        if let Some(tx) = &self.handles {
            let _ = tx.send(session.handle());
        }
    }

    fn on_message(&mut self, _session: &mut Session<'_, ()>, message: Message<'_>) {
        if let (Message::Text(t), Some(tx)) = (message, &self.seen) {
            let _ = tx.send(t.to_owned());
        }
    }
}

#[test]
fn hold_until_stops_reading_a_session_until_the_gate_opens_and_loses_nothing() {
    let (handles_tx, handles) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    let senders = Mutex::new((handles_tx, seen_tx));
    let server = TestServer::start(test_config(), move || {
        let s = senders.lock().unwrap();
        Reporter {
            handles: Some(s.0.clone()),
            seen: Some(s.1.clone()),
        }
    });
    let mut producer = client(&server.url("/"));
    let handle = recv(&handles, "the producer's handle");
    producer.send_text("before").expect("send");
    assert_eq!(recv(&seen, "a message before the hold"), "before");
    let gate = Gate::new();
    gate.close();
    handle.hold_until(&gate).expect("hold");
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.stats().gate_pauses == 0 {
        assert!(Instant::now() < deadline, "the hold was never applied");
        thread::sleep(Duration::from_millis(5));
    }
    producer.send_text("held").expect("send");
    assert!(
        seen.recv_timeout(Duration::from_millis(300)).is_err(),
        "a held session is not read"
    );
    gate.open();
    assert_eq!(
        recv(&seen, "the held message after the gate opened"),
        "held"
    );
    // A hold on an open gate does nothing.
    handle.hold_until(&gate).expect("hold");
    producer.send_text("free").expect("send");
    assert_eq!(
        recv(&seen, "a message after a hold on an open gate"),
        "free"
    );
    close_client(&mut producer);
    server.finish();
}
