//! Handshake rules, one test per rule, each asserting the exact status.

use super::client::{self, parse_response, Accepted, RequestParts, ResponseError};
use super::*;

const GOOD: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Parses `raw` and judges it as an upgrade; the HTTP status the server would answer.
fn judge(raw: &str, config: &HandshakeConfig) -> Result<(), u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse_request(raw.as_bytes(), &mut headers, config) {
        Ok(Status::Complete(req, n)) => {
            assert_eq!(n, raw.len());
            validate_upgrade(&req, config)
                .map(|_| ())
                .map_err(|e| e.status())
        }
        Ok(Status::Partial) => panic!("partial"),
        Err(e) => Err(e.status()),
    }
}

fn replace(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn rfc_sample_key() {
    assert_eq!(
        &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn good_request_is_accepted_with_its_parts() {
    let config = HandshakeConfig::default();
    assert_eq!(judge(GOOD, &config), Ok(()));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(Status::Complete(req, _)) = parse_request(GOOD.as_bytes(), &mut headers, &config) else {
        panic!()
    };
    assert_eq!(req.path(), "/chat");
    assert_eq!(req.query(), Some("room=1"));
    assert!(req.is_websocket());
    assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
}

#[test]
fn every_prefix_is_partial() {
    let config = HandshakeConfig::default();
    for cut in 0..GOOD.len() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let r = parse_request(&GOOD.as_bytes()[..cut], &mut headers, &config);
        assert!(matches!(r, Ok(Status::Partial)), "cut {cut}: {r:?}");
    }
}

#[test]
fn header_tokens_are_case_insensitive_lists() {
    let raw = replace("Upgrade: websocket", "upgrade: WebSocket")
        .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
    assert_eq!(judge(&raw, &HandshakeConfig::default()), Ok(()));
}

#[test]
fn method_must_be_get() {
    assert_eq!(
        judge(&replace("GET ", "POST "), &HandshakeConfig::default()),
        Err(400)
    );
}

#[test]
fn version_must_be_http_1_1() {
    assert_eq!(
        judge(
            &replace("HTTP/1.1", "HTTP/1.0"),
            &HandshakeConfig::default()
        ),
        Err(400)
    );
}

#[test]
fn host_is_required() {
    assert_eq!(
        judge(
            &replace("Host: server.example.com\r\n", ""),
            &HandshakeConfig::default()
        ),
        Err(400)
    );
}

#[test]
fn connection_upgrade_is_required() {
    let raw = replace("Connection: Upgrade", "Connection: keep-alive");
    assert_eq!(judge(&raw, &HandshakeConfig::default()), Err(400));
}

#[test]
fn key_must_be_16_bytes_of_base64() {
    let config = HandshakeConfig::default();
    assert_eq!(
        judge(&replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), &config),
        Err(400)
    );
    assert_eq!(
        judge(
            &replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!!"),
            &config
        ),
        Err(400)
    );
    assert_eq!(
        judge(
            &replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            &config
        ),
        Err(400)
    );
    let twice = replace(
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    assert_eq!(judge(&twice, &config), Err(400));
}

#[test]
fn other_versions_get_426_naming_13() {
    let config = HandshakeConfig::default();
    assert_eq!(
        judge(&replace("Version: 13", "Version: 8"), &config),
        Err(426)
    );
    assert_eq!(
        judge(&replace("Sec-WebSocket-Version: 13\r\n", ""), &config),
        Err(426)
    );
    let mut out = Vec::new();
    write_rejection(&mut out, &HandshakeError::UnsupportedVersion);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
}

#[test]
fn origin_allow_list() {
    let config = HandshakeConfig {
        allowed_origins: Origins::List(vec!["https://chat.example.com".into()]),
        ..HandshakeConfig::default()
    };
    assert_eq!(judge(GOOD, &config), Err(403));
    assert_eq!(
        judge(
            &replace("http://example.com", "HTTPS://chat.example.com"),
            &config
        ),
        Ok(())
    );
    assert_eq!(
        judge(&replace("Origin: http://example.com\r\n", ""), &config),
        Ok(())
    );
}

#[test]
fn head_size_and_header_count_are_capped_with_431() {
    let config = HandshakeConfig {
        max_head_size: 256,
        ..HandshakeConfig::default()
    };
    let big = replace(
        "Upgrade: websocket\r\n",
        &format!("Upgrade: websocket\r\nX-Pad: {}\r\n", "a".repeat(300)),
    );
    assert_eq!(judge(&big, &config), Err(431));
    // Never a hang: a head that keeps growing without ending fails once it passes the cap.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let endless = format!("GET / HTTP/1.1\r\nX-Pad: {}", "a".repeat(300));
    assert_eq!(
        parse_request(endless.as_bytes(), &mut headers, &config)
            .unwrap_err()
            .status(),
        431
    );
    let config = HandshakeConfig {
        max_headers: 4,
        ..HandshakeConfig::default()
    };
    assert_eq!(judge(GOOD, &config), Err(431));
}

#[test]
fn malformed_requests_get_400() {
    let config = HandshakeConfig::default();
    for raw in [
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        "GET / HTTX/1.1\r\n\r\n",
    ] {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let err = parse_request(raw.as_bytes(), &mut headers, &config).unwrap_err();
        assert_eq!(err.status(), 400, "{raw:?}");
    }
}

#[test]
fn protocol_selection_follows_server_preference() {
    let supported = vec![
        "v12.stomp".to_string(),
        "v11.stomp".to_string(),
        "v10.stomp".to_string(),
    ];
    let offered = ["v10.stomp", "v11.stomp"];
    assert_eq!(
        select_protocol(&supported, offered.iter().copied()),
        Some("v11.stomp")
    );
    assert_eq!(select_protocol(&supported, ["mqtt"].iter().copied()), None);
    assert_eq!(select_protocol(&[], offered.iter().copied()), None);
}

#[test]
fn accept_response_is_well_formed() {
    let mut out = Vec::new();
    write_accept(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), &[]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
    );
}

#[test]
fn content_length_rules() {
    let config = HandshakeConfig::default();
    let check = |raw: &str| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Ok(Status::Complete(req, _)) = parse_request(raw.as_bytes(), &mut headers, &config)
        else {
            panic!()
        };
        req.content_length()
    };
    assert_eq!(
        check("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
        Ok(Some(12))
    );
    assert_eq!(check("GET / HTTP/1.1\r\n\r\n"), Ok(None));
    assert!(check("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
    assert!(check("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err());
}

// --- client side ---------------------------------------------------------------------------

const KEY: [u8; 24] = *b"dGhlIHNhbXBsZSBub25jZQ==";

fn response(extra: &str) -> String {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n")
}

#[test]
fn client_request_is_accepted_by_the_server_side() {
    let protocols = vec!["v12.stomp".to_string()];
    let parts = RequestParts {
        host: "localhost:80",
        target: "/ws",
        origin: Some("http://x"),
        protocols: &protocols,
        headers: &[],
        deflate: None,
    };
    let mut out = Vec::new();
    client::write_request(&mut out, &parts, &KEY);
    let config = HandshakeConfig::default();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(Status::Complete(req, _)) = parse_request(&out, &mut headers, &config) else {
        panic!()
    };
    assert_eq!(validate_upgrade(&req, &config).unwrap().key, &KEY[..]);
    assert_eq!(req.protocols().collect::<Vec<_>>(), ["v12.stomp"]);
}

#[test]
fn client_checks_the_response() {
    let offered = vec!["v12.stomp".to_string()];
    let ok = response("Sec-WebSocket-Protocol: v12.stomp\r\n");
    assert_eq!(
        parse_response(ok.as_bytes(), &KEY, &offered, 8192),
        Ok(Status::Complete(
            Accepted {
                protocol: Some("v12.stomp".into()),
                deflate: None,
            },
            ok.len()
        ))
    );
    assert_eq!(
        parse_response(&ok.as_bytes()[..20], &KEY, &offered, 8192),
        Ok(Status::Partial)
    );
    let cases = [
        (
            "HTTP/1.1 403 Forbidden\r\n\r\n".to_string(),
            ResponseError::Status(403),
        ),
        (
            response("").replace(
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ResponseError::BadAccept,
        ),
        (
            response("Sec-WebSocket-Protocol: mqtt\r\n"),
            ResponseError::UnofferedProtocol("mqtt".into()),
        ),
        (
            response("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            ResponseError::UnrequestedExtension("permessage-deflate".into()),
        ),
        (
            response("").replace("Upgrade: websocket\r\n", ""),
            ResponseError::MissingUpgrade,
        ),
        (
            response("").replace("Connection: Upgrade\r\n", ""),
            ResponseError::MissingConnectionUpgrade,
        ),
    ];
    for (raw, expected) in cases {
        assert_eq!(
            parse_response(raw.as_bytes(), &KEY, &offered, 8192),
            Err(expected),
            "{raw}"
        );
    }
}
