//! `sockeye-chat --tls-cert --tls-key [--stomp-tls]`: the binary itself serves https, wss and
//! STOMP over TLS, and SIGHUP swaps the certificate for new handshakes while open sessions
//! (wss and STOMP over TLS) go on. Certificates come from throwaway CAs (rcgen).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sockeye::client::{Client, ClientConfig, ClientError, OwnedEvent};
use sockeye::tls::{rustls, ClientTls};

const WAIT: Duration = Duration::from_secs(20);

/// A CA's certificate (PEM) and a leaf for localhost / 127.0.0.1 it signed (chain, key).
fn ca_and_leaf(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca = params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("leaf params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

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

fn start(cert: &Path, key: &Path) -> Chat {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-chat"))
        .args(["--listen", "127.0.0.1:0", "--stomp-listen", "127.0.0.1:0"])
        .args(["--data-dir", "off", "--workers", "1", "--stomp-tls"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
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
    let deadline = Instant::now() + WAIT;
    while http.is_none() || stomp.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("sockeye-chat did not print both addresses in {WAIT:?}"));
        if let Some(rest) = line.strip_prefix("sockeye-chat: open https://") {
            http = Some(
                rest.trim_end_matches("/ in a browser")
                    .parse()
                    .expect("addr"),
            );
        }
        if let Some(rest) = line.strip_prefix("sockeye-chat: STOMP over TCP with TLS at ") {
            stomp = Some(rest.parse().expect("addr"));
        }
    }
    Chat {
        child,
        http: http.unwrap(),
        stomp: stomp.unwrap(),
    }
}

fn roots(ca: &str) -> ClientTls {
    ClientTls::with_roots_pem(ca.as_bytes()).expect("roots")
}

/// A raw TLS stream (https, STOMP over TLS) trusting `ca`.
fn tls_stream(
    addr: SocketAddr,
    ca: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(roots(ca).config(), name).expect("session");
    let tcp = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    tcp.set_write_timeout(Some(WAIT)).expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads a STOMP frame (up to its NUL) from a raw stream; `what` names it for the failure.
fn stomp_frame(stream: &mut impl Read, what: &str) -> String {
    let mut frame = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == 0 && !frame.iter().all(|b| *b == b'\n') => break,
            Ok(1) => frame.push(byte[0]),
            Ok(_) => panic!("the connection ended while waiting for {what}"),
            Err(e) => panic!("no {what} within {WAIT:?}: {e}"),
        }
    }
    String::from_utf8_lossy(&frame)
        .trim_start_matches('\n')
        .to_string()
}

fn wss(chat: &Chat, ca: &str) -> Result<Client, ClientError> {
    let config = ClientConfig {
        protocols: vec!["v12.stomp".into()],
        handshake_timeout: WAIT,
        io_timeout: Some(WAIT),
        tls: Some(roots(ca)),
        ..ClientConfig::default()
    };
    Client::connect_with(&format!("wss://localhost:{}/ws", chat.http.port()), &config)
}

/// A STOMP frame over the WebSocket and the text frame that answers it.
fn ws_exchange(client: &mut Client, frame: &str, what: &str) -> String {
    client.send_text(frame).expect("send");
    loop {
        match client.read() {
            Ok(OwnedEvent::Text(t)) if t.trim_matches('\n').is_empty() => {} // heart-beat
            Ok(OwnedEvent::Text(t)) => return t,
            Ok(other) => panic!("expected {what}, got {other:?}"),
            Err(e) => panic!("no {what} within {WAIT:?}: {e}"),
        }
    }
}

#[test]
fn tls_serves_https_wss_and_stomp_and_reloads_on_sighup() {
    let dir = std::env::temp_dir().join(format!("sockeye-chat-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let (ca1, chain1, key1) = ca_and_leaf("first CA");
    std::fs::write(&cert, chain1).expect("write cert");
    std::fs::write(&key, key1).expect("write key");
    let chat = start(&cert, &key);

    // https: the page.
    let mut page = tls_stream(chat.http, &ca1);
    page.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send GET /");
    let mut answer = Vec::new();
    let _ = page.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // wss: STOMP over WebSocket.
    let mut ws = wss(&chat, &ca1).expect("wss with the first CA");
    let connected = ws_exchange(
        &mut ws,
        "CONNECT\naccept-version:1.2\nhost:localhost\n\n\0",
        "CONNECTED",
    );
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");

    // STOMP over TCP with TLS.
    let mut tcp = tls_stream(chat.stomp, &ca1);
    tcp.write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .expect("send CONNECT");
    let connected = stomp_frame(&mut tcp, "CONNECTED over TLS");
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");

    // A new certificate from another CA, then SIGHUP.
    let (ca2, chain2, key2) = ca_and_leaf("second CA");
    std::fs::write(&cert, chain2).expect("write new cert");
    std::fs::write(&key, key2).expect("write new key");
    let hup = Command::new("kill")
        .args(["-HUP", &chat.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(hup.success(), "kill -HUP failed");
    let deadline = Instant::now() + WAIT;
    let mut fresh = loop {
        match wss(&chat, &ca2) {
            Ok(client) => break client,
            Err(ClientError::Tls(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no handshake with the second CA's certificate after SIGHUP: {e}"),
        }
    };
    assert!(
        matches!(wss(&chat, &ca1), Err(ClientError::Tls(_))),
        "the old certificate is still presented after SIGHUP"
    );
    let connected = ws_exchange(
        &mut fresh,
        "CONNECT\naccept-version:1.2\nhost:localhost\n\n\0",
        "CONNECTED",
    );
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");

    // The sessions opened before the reload go on.
    let receipt = ws_exchange(
        &mut ws,
        "SUBSCRIBE\nid:0\ndestination:/topic/t\nreceipt:r1\n\n\0",
        "RECEIPT on the old wss session",
    );
    assert!(receipt.starts_with("RECEIPT\n"), "{receipt}");
    tcp.write_all(b"SUBSCRIBE\nid:0\ndestination:/topic/t\nreceipt:r2\n\n\0")
        .expect("send SUBSCRIBE");
    let receipt = stomp_frame(&mut tcp, "RECEIPT on the old STOMP/TLS session");
    assert!(receipt.starts_with("RECEIPT\n"), "{receipt}");

    drop(chat);
    let _ = std::fs::remove_dir_all(&dir);
}
