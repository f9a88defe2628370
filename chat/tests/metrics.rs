//! `GET /metrics`, `/healthz` and `/readyz` of the `sockeye-chat` binary on ephemeral ports:
//! a counter moves with the messages sent, and `promtool check metrics` (Debian's prometheus
//! package; `bash scripts/promtool.sh` installs it) accepts the text. Without promtool that
//! check is skipped with a note, unless SOCKEYE_REQUIRE_PROMTOOL=1 (CI) makes it a failure.
//!
//! Every wait is bounded: the server's address line by `recv_timeout`, sockets by read
//! timeouts, promtool by a watchdog.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::binary::{start, WAIT};
use common::Stomp;

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
    let chat = start(&[]);
    let (status, before) = chat.get("/metrics");
    assert_eq!(status, 200, "{before}");
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    for i in 0..10 {
        ann.send(&format!(
            "SEND\ndestination:/topic/t\nreceipt:r{i}\n\nhello"
        ));
        ann.expect("RECEIPT", "a receipt");
    }
    let (_, after) = chat.get("/metrics");
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
    assert_eq!(chat.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(chat.get("/readyz"), (200, "ready\n".into()));
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
    let chat = start(&[]);
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    ann.subscribe("s", "/topic/t");
    ann.send("SEND\ndestination:/topic/t\n\nhello");
    ann.expect("MESSAGE", "the message back");
    let (_, text) = chat.get("/metrics");
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
