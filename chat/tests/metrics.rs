//! `GET /metrics`, `/healthz` and `/readyz` of the `sockeye-chat` binary on ephemeral ports:
//! a counter moves with the messages sent, and `promtool check metrics` (Debian's prometheus
//! package; `bash scripts/promtool.sh` installs it) accepts the text. Without promtool that
//! check is skipped with a note, unless SOCKEYE_REQUIRE_PROMTOOL=1 (CI) makes it a failure.
//!
//! Every wait is bounded: the server's address line by `recv_timeout`, sockets by read
//! timeouts, promtool by a watchdog.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Stomp, TIMEOUT};

const WAIT: Duration = Duration::from_secs(20);

struct Chat {
    child: Child,
    http: SocketAddr,
    stomp: SocketAddr,
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Chat {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-chat"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stomp-listen",
            "127.0.0.1:0",
            "--data-dir",
            "off",
        ])
        .args(["--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sockeye-chat");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut http, mut stomp) = (None, None);
    while http.is_none() || stomp.is_none() {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("sockeye-chat did not print its addresses within {WAIT:?}"));
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
    }
}

/// `GET path`: the status and the body.
fn get(chat: &Chat, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&chat.http, TIMEOUT).expect("connect HTTP");
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

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .parse()
        .expect("a number")
}

/// Ten SENDs with receipts over TCP move `sockeye_broker_receipts_total` and the TCP byte
/// counter by at least that much; `/healthz` and `/readyz` answer 200.
#[test]
fn a_counter_moves_with_the_messages_sent() {
    let chat = start();
    let (status, before) = get(&chat, "/metrics");
    assert_eq!(status, 200, "{before}");
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    for i in 0..10 {
        ann.send(&format!(
            "SEND\ndestination:/topic/t\nreceipt:r{i}\n\nhello"
        ));
        ann.expect("RECEIPT", "a receipt");
    }
    let (_, after) = get(&chat, "/metrics");
    let receipts = "sockeye_broker_receipts_total";
    assert!(
        sample(&after, receipts) >= sample(&before, receipts) + 10.0,
        "{after}"
    );
    let bytes = "sockeye_stomp_received_bytes_total{transport=\"tcp\"}";
    assert!(
        sample(&after, bytes) >= sample(&before, bytes) + 10.0 * 40.0,
        "{after}"
    );
    assert_eq!(sample(&after, "sockeye_broker_sessions"), 1.0, "{after}");
    assert_eq!(
        sample(&after, "sockeye_connections_open{transport=\"tcp\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(get(&chat, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&chat, "/readyz"), (200, "ready\n".into()));
}

/// `promtool check metrics` accepts a scrape taken after some traffic.
#[test]
fn promtool_accepts_the_metrics() {
    let Ok(promtool) = which_promtool() else {
        assert!(
            std::env::var_os("SOCKEYE_REQUIRE_PROMTOOL").is_none(),
            "SOCKEYE_REQUIRE_PROMTOOL is set but promtool is not on PATH (bash scripts/promtool.sh)"
        );
        eprintln!("promtool not on PATH: skipped (bash scripts/promtool.sh installs it)");
        return;
    };
    let chat = start();
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    ann.subscribe("s", "/topic/t");
    ann.send("SEND\ndestination:/topic/t\n\nhello");
    ann.expect("MESSAGE", "the message back");
    let (_, text) = get(&chat, "/metrics");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("promtool did not finish within {WAIT:?}"))
        .expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which_promtool() -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .ok_or(())
}
