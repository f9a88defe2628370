//! The `sockeye-chat` binary under test: started on ephemeral ports with extra flags, its
//! addresses read from its first lines, its log (stdout and stderr) kept for the test to
//! search. Every wait is bounded and fails naming what it waited for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// How long the server may take to print its addresses.
pub const WAIT: Duration = Duration::from_secs(20);

/// A `sockeye-chat` process; killed when dropped.
pub struct Chat {
    child: Child,
    pub http: SocketAddr,
    pub stomp: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn command(extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockeye-chat"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--stomp-listen",
        "127.0.0.1:0",
        "--data-dir",
        "off",
        "--workers",
        "2",
    ])
    .args(extra)
    .env("NO_COLOR", "1")
    .env("RUST_LOG", "info");
    cmd
}

/// Starts the server with `extra` flags; waits for its two addresses.
pub fn start(extra: &[&str]) -> Chat {
    let mut child = command(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockeye-chat");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let (tx, log) = (tx.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                log.lock().unwrap().push(line);
            }
        });
    }
    let (mut http, mut stomp) = (None, None);
    let until = Instant::now() + WAIT;
    while http.is_none() || stomp.is_none() {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("sockeye-chat {extra:?} did not print its addresses within {WAIT:?}")
        });
        if let Some(rest) = line.strip_prefix("sockeye-chat: open http://") {
            http = Some(rest.trim_end_matches("/ in a browser").parse().unwrap());
        }
        if let Some(rest) = line.strip_prefix("sockeye-chat: STOMP over TCP at ") {
            stomp = Some(rest.trim().parse().unwrap());
        }
    }
    Chat {
        child,
        http: http.unwrap(),
        stomp: stomp.unwrap(),
        log,
    }
}

impl Chat {
    /// Waits for a log line holding every one of `parts`; returns it.
    pub fn logged(&self, parts: &[&str]) -> String {
        let until = Instant::now() + TIMEOUT;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if Instant::now() >= until {
                let log = self.log.lock().unwrap();
                let tail = log[log.len().saturating_sub(10)..].join("\n");
                panic!("no log line with {parts:?} within {TIMEOUT:?}; the last ones:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path`: the status and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s =
            std::net::TcpStream::connect_timeout(&self.http, TIMEOUT).expect("connect HTTP");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response)
            .unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"));
        let status = response[9..12].parse().expect("a status");
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }
}
