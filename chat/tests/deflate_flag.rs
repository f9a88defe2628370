//! `sockeye-chat` negotiates permessage-deflate by default, and `--deflate off` turns it off:
//! the binary itself, on an ephemeral port, answering a browser-like offer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Chat {
    child: Child,
    addr: String,
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Chat {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-chat"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stomp-listen",
            "off",
            "--data-dir",
            "off",
            "--workers",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sockeye-chat");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("sockeye-chat: open http://") {
                let _ = tx.send(rest.trim_end_matches("/ in a browser").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("sockeye-chat did not print its address within {WAIT:?}"));
    Chat { child, addr }
}

/// The `Sec-WebSocket-Extensions` answer to Chrome's offer on `/ws`, if any.
fn answer(chat: &Chat) -> Option<String> {
    let mut stream = TcpStream::connect(&chat.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        chat.addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream
            .read(&mut byte)
            .unwrap_or_else(|e| panic!("no handshake answer within {WAIT:?}: {e}"));
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(String::from)
}

#[test]
fn deflate_is_on_by_default_and_off_with_the_flag() {
    let chat = start(&[]);
    assert_eq!(
        answer(&chat).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    drop(chat);
    let chat = start(&["--deflate", "takeover"]);
    assert_eq!(answer(&chat).as_deref(), Some("permessage-deflate"));
    drop(chat);
    let chat = start(&["--deflate", "off"]);
    assert_eq!(answer(&chat), None);
}
