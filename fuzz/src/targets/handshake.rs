//! The opening handshake on arbitrary bytes: the server's request parser and judge with the
//! response it writes, and the client's response parser.
//!
//! Input: a config byte (head size, header count, origin list, sub-protocols), then bytes that
//! are parsed both as a request (server side) and as a response (client side).

use sockeye::handshake::client::{self, Accepted};
use sockeye::handshake::{
    accept_key, parse_request, select_protocol, validate_upgrade, write_accept, write_rejection,
    HandshakeConfig, HandshakeError, Origins, MAX_HEADERS,
};
use sockeye::Status;

use crate::input::Cursor;

/// The RFC 6455 §1.3 sample key, so that the seed response with its accept value is valid.
pub const CLIENT_KEY: &[u8; 24] = b"dGhlIHNhbXBsZSBub25jZQ==";

fn config(b: u8) -> HandshakeConfig {
    HandshakeConfig {
        max_head_size: [8192, 256, 1024, 64][usize::from(b & 3)],
        max_headers: [48, 4, 16, 100][usize::from((b >> 2) & 3)],
        allowed_origins: if b & 0x10 != 0 {
            Origins::List(vec!["https://chat.example.com".into()])
        } else {
            Origins::Any
        },
        protocols: if b & 0x20 != 0 {
            vec!["superchat".into(), "chat".into()]
        } else {
            vec![]
        },
    }
}

/// A response head and the rest, parsed with httparse directly.
fn parse_head(out: &[u8]) -> (u16, Vec<(String, Vec<u8>)>, usize) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "unparseable response {other:?}: {:?}",
            String::from_utf8_lossy(out)
        ),
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    (resp.code.expect("status"), headers, n)
}

fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| &v[..])
        .collect()
}

fn reject(error: &HandshakeError) {
    let mut out = Vec::new();
    write_rejection(&mut out, error);
    let (status, headers, n) = parse_head(&out);
    assert!(
        [400, 403, 426, 431].contains(&status),
        "{error:?} answered {status}"
    );
    assert_eq!(status, error.status());
    let length = values(&headers, "content-length");
    assert_eq!(
        length,
        [(out.len() - n).to_string().as_bytes()],
        "body length"
    );
    if status == 426 {
        assert_eq!(values(&headers, "sec-websocket-version"), [b"13"]);
    }
}

fn server(bytes: &[u8], config: &HandshakeConfig) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match parse_request(bytes, &mut headers, config) {
        Ok(Status::Complete(req, n)) => {
            assert!(
                n <= config.max_head_size && n <= bytes.len(),
                "head of {n} bytes"
            );
            assert!(req.headers.len() <= config.max_headers);
            req
        }
        Ok(Status::Partial) => {
            assert!(bytes.len() < config.max_head_size, "partial past the limit");
            return;
        }
        Err(e) => return reject(&e),
    };
    // The accessors must cope with anything the parser let through.
    let _ = (
        req.path(),
        req.query(),
        req.content_length(),
        req.header_str("host"),
    );
    if !req.is_websocket() {
        return;
    }
    let upgrade = match validate_upgrade(&req, config) {
        Ok(upgrade) => upgrade,
        Err(e) => return reject(&e),
    };
    assert_eq!((req.method, req.version), ("GET", 1));
    if let (Origins::List(allowed), Some(origin)) = (&config.allowed_origins, upgrade.origin) {
        assert!(allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)));
    }
    let key: &[u8; 24] = upgrade.key.try_into().expect("a valid key is 24 bytes");
    let protocol = select_protocol(&config.protocols, req.protocols());
    let mut out = Vec::new();
    write_accept(&mut out, upgrade.key, protocol, &[]);
    let (status, headers, n) = parse_head(&out);
    assert_eq!((status, n), (101, out.len()));
    assert_eq!(
        values(&headers, "sec-websocket-accept"),
        [&accept_key(key)[..]]
    );
    // The client side accepts what the server side wrote.
    let offered: Vec<String> = req.protocols().map(String::from).collect();
    let accepted = client::parse_response(&out, key, &offered, 8192);
    let expected = Accepted {
        protocol: protocol.map(String::from),
        deflate: None,
    };
    assert_eq!(accepted, Ok(Status::Complete(expected, out.len())));
}

fn client(bytes: &[u8], max_head: usize, offered: &[String]) {
    match client::parse_response(bytes, CLIENT_KEY, offered, max_head) {
        Ok(Status::Complete(accepted, n)) => {
            assert!(n <= max_head && n <= bytes.len(), "head of {n} bytes");
            let (status, headers, m) = parse_head(&bytes[..n]);
            assert_eq!((status, m), (101, n));
            assert_eq!(
                values(&headers, "sec-websocket-accept")
                    .iter()
                    .map(|v| v.trim_ascii())
                    .collect::<Vec<_>>(),
                [&accept_key(CLIENT_KEY)[..]]
            );
            if let Some(p) = accepted.protocol {
                assert!(offered.contains(&p), "unoffered {p:?} accepted");
            }
        }
        Ok(Status::Partial) => assert!(bytes.len() < max_head, "partial past the limit"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let config = config(input.u8());
    let bytes = input.rest();
    server(bytes, &config);
    client(bytes, config.max_head_size, &config.protocols);
}
