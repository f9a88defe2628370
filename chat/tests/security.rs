//! Operating `sockeye-chat` safely: the binary itself on ephemeral ports, attacked the ways
//! the deployment guide worries about. Each case's name says what is tried and its doc comment
//! the expected answer.
//!
//! Every wait is bounded and fails naming what it waited for: the server's address lines and
//! log lines are awaited with `recv_timeout`/deadlines, TCP clients carry read timeouts
//! (`common::Stomp`), WebSocket clients `ClientConfig::io_timeout`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Stomp, TIMEOUT};
use sockeye::client::{Client, ClientConfig, ClientError};
use sockeye::handshake::client::ResponseError;

const WAIT: Duration = Duration::from_secs(20);

/// A `sockeye-chat` process; killed when dropped.
struct Chat {
    child: Child,
    http: SocketAddr,
    stomp: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(extra: &[&str]) -> Command {
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
fn start(extra: &[&str]) -> Chat {
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
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("sockeye-chat {extra:?} did not print its addresses within {WAIT:?}"));
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
    fn logged(&self, parts: &[&str]) -> String {
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
            assert!(
                Instant::now() < until,
                "no log line with {parts:?} within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A WebSocket to `/ws` as a page on `origin` (if any) would open it.
    fn ws(&self, origin: Option<&str>) -> Result<Client, ClientError> {
        let config = ClientConfig {
            protocols: vec!["v12.stomp".into()],
            origin: origin.map(str::to_owned),
            handshake_timeout: TIMEOUT,
            io_timeout: Some(TIMEOUT),
            ..ClientConfig::default()
        };
        Client::connect_with(&format!("ws://{}/ws", self.http), &config)
    }
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockeye-security-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn refused_status(result: Result<Client, ClientError>) -> u16 {
    match result {
        Err(ClientError::Handshake(ResponseError::Status(status))) => status,
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the WebSocket opened"),
    }
}

// --- origins ---------------------------------------------------------------------------------

/// A page on a foreign origin opening `/ws` with the default settings: refused with 403, and
/// a log line names the origin. The server's own pages (Origin = Host) and non-browser
/// clients (no Origin) get in.
#[test]
fn foreign_origin_opening_ws_is_refused_by_default() {
    let chat = start(&[]);
    let status = refused_status(chat.ws(Some("http://evil.example")));
    assert_eq!(status, 403);
    let line = chat.logged(&["origin not allowed", "http://evil.example"]);
    assert!(line.contains("WARN"), "{line}");
    let own = format!("http://{}", chat.http);
    chat.ws(Some(&own)).expect("a page of the server itself opens /ws");
    chat.ws(None).expect("a client without Origin opens /ws");
    let other_port = format!("http://127.0.0.1:{}", chat.http.port() + 1);
    assert_eq!(refused_status(chat.ws(Some(&other_port))), 403, "another port is another origin");
}

/// `--allowed-origins` adds origins to same-origin; `*` allows any.
#[test]
fn allowed_origins_widen_the_default() {
    let chat = start(&["--allowed-origins", "https://chat.example.com"]);
    chat.ws(Some("https://chat.example.com")).expect("a listed origin opens /ws");
    chat.ws(Some(&format!("http://{}", chat.http)))
        .expect("same-origin still opens /ws");
    assert_eq!(refused_status(chat.ws(Some("http://evil.example"))), 403);
    let any = start(&["--allowed-origins", "*"]);
    any.ws(Some("http://evil.example")).expect("* lets any origin in");
}
