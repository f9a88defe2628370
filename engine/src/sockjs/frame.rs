//! SockJS frames and how each transport wraps them.
//!
//! Four frames go to the client: `o` (open), `h` (heart-beat), `a[...]` (messages, each a
//! JSON string) and `c[code,"reason"]` (close). Each transport wraps a frame its own way
//! ([`wrap`]) and some start their response with a prelude ([`prelude`]).

use super::json;
use super::route::Transport;

/// The open frame.
pub const OPEN: &[u8] = b"o";
/// The heart-beat frame.
pub const HEARTBEAT: &[u8] = b"h";

/// `c[code,"reason"]`.
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut out = format!("c[{code},").into_bytes();
    json::push_string(&mut out, reason);
    out.push(b']');
    out
}

/// Messages gathered into one `a[...]` frame: each is appended already encoded as a JSON
/// string, so that what a session queues is the frame's body and delivery only brackets it.
#[derive(Debug, Default)]
pub struct Messages {
    body: Vec<u8>,
    count: usize,
}

impl Messages {
    pub fn push(&mut self, text: &str) {
        if self.count > 0 {
            self.body.push(b',');
        }
        json::push_string(&mut self.body, text);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes queued (the frame's body).
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// The `a[...]` frame of everything queued, which is taken.
    pub fn take_frame(&mut self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(self.body.len() + 3);
        frame.extend_from_slice(b"a[");
        frame.extend_from_slice(&self.body);
        frame.push(b']');
        self.body.clear();
        if self.body.capacity() > 64 << 10 {
            self.body = Vec::new();
        }
        self.count = 0;
        frame
    }
}

/// Bytes of `h` an `xhr_streaming` response starts with (so that old browsers start handing
/// the response out as it arrives).
const XHR_PRELUDE: usize = 2048;

/// The first bytes of a receiving response, before any frame. `callback` is the htmlfile's.
pub fn prelude(transport: Transport, callback: &str) -> Vec<u8> {
    match transport {
        Transport::XhrStreaming => {
            let mut out = vec![b'h'; XHR_PRELUDE];
            out.push(b'\n');
            out
        }
        Transport::EventSource => b"\r\n".to_vec(),
        Transport::HtmlFile => {
            let mut out = HTMLFILE_HEAD.replace("{callback}", callback).into_bytes();
            // Internet Explorer renders nothing before the first kilobyte.
            out.resize(out.len().max(1024), b' ');
            out.extend_from_slice(b"\r\n\r\n");
            out
        }
        _ => Vec::new(),
    }
}

/// The page the htmlfile transport streams script tags into (the protocol fixes it).
const HTMLFILE_HEAD: &str = r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{callback};
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"#;

/// Appends `frame` to `out` as `transport` carries it (`callback` for the JSONP and htmlfile
/// ones). The WebSocket transport carries frames as they are.
pub fn wrap(out: &mut Vec<u8>, transport: Transport, callback: &str, frame: &[u8]) {
    // Frames are ASCII or UTF-8 built from strings.
    let text = std::str::from_utf8(frame).unwrap_or("");
    match transport {
        Transport::XhrPolling | Transport::XhrStreaming => {
            out.extend_from_slice(frame);
            out.push(b'\n');
        }
        Transport::EventSource => {
            // sockjs-client URI-decodes each event: `%` is escaped (with what would end the
            // event, which JSON never holds raw anyway), as sockjs-node does.
            out.extend_from_slice(b"data: ");
            for &b in frame {
                match b {
                    b'%' => out.extend_from_slice(b"%25"),
                    b'\r' => out.extend_from_slice(b"%0D"),
                    b'\n' => out.extend_from_slice(b"%0A"),
                    0 => out.extend_from_slice(b"%00"),
                    _ => out.push(b),
                }
            }
            out.extend_from_slice(b"\r\n\r\n");
        }
        Transport::HtmlFile => {
            out.extend_from_slice(b"<script>\np(");
            json::push_string(out, text);
            out.extend_from_slice(b");\n</script>\r\n");
        }
        Transport::JsonpPolling => {
            out.extend_from_slice(callback.as_bytes());
            out.push(b'(');
            json::push_string(out, text);
            out.extend_from_slice(b");\r\n");
        }
        Transport::WebSocket | Transport::XhrSend | Transport::JsonpSend => {
            out.extend_from_slice(frame)
        }
    }
}

/// The page `/iframe.html` serves: it loads the client from `client_url` and lets it talk to
/// the server from the server's own origin.
pub fn iframe_page(client_url: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script>
    document.domain = document.domain;
    _sockjs_onload = function(){{SockJS.bootstrap_iframe();}};
  </script>
  <script src="{client_url}"></script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#
    )
}

/// Why a callback name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackError {
    Missing,
    /// Holds something other than letters, digits, `_`, `-` and `.`: it is written into a
    /// script, so nothing else may pass.
    Invalid,
}

impl CallbackError {
    pub fn message(self) -> &'static str {
        match self {
            CallbackError::Missing => "\"callback\" parameter required",
            CallbackError::Invalid => "invalid \"callback\" parameter",
        }
    }
}

/// The `c` (or `callback`) query parameter of a JSONP or htmlfile request, percent-decoded and
/// checked.
pub fn callback(query: Option<&str>) -> Result<String, CallbackError> {
    let value = query
        .and_then(|q| query_param(q, "c").or_else(|| query_param(q, "callback")))
        .filter(|v| !v.is_empty())
        .ok_or(CallbackError::Missing)?;
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        Ok(value)
    } else {
        Err(CallbackError::Invalid)
    }
}

/// The first value of `name` in a form-encoded string (`a=1&b=2`), decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k.as_bytes()).as_deref() == Some(name.as_bytes()))
            .then(|| percent_decode(v.as_bytes()))
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    })
}

/// Decodes `%xx` escapes and `+` (a space, in forms). `None` for a broken escape.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(value);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The payload of a `jsonp_send` body: the `d` field of a form, or the body itself.
pub fn jsonp_payload(body: &[u8], form: bool) -> Vec<u8> {
    if !form {
        return body.to_vec();
    }
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "d").then(|| percent_decode(v.as_bytes()))?
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_their_wrappings() {
        assert_eq!(close(3000, "Go away!"), b"c[3000,\"Go away!\"]");
        let mut m = Messages::default();
        assert!(m.is_empty());
        m.push("a");
        m.push("b\"");
        assert_eq!(m.take_frame(), b"a[\"a\",\"b\\\"\"]");
        assert!(m.is_empty());
        let frame = b"a[\"x\"]";
        let mut out = Vec::new();
        wrap(&mut out, Transport::XhrPolling, "", frame);
        assert_eq!(out, b"a[\"x\"]\n");
        out.clear();
        wrap(&mut out, Transport::EventSource, "", frame);
        assert_eq!(out, b"data: a[\"x\"]\r\n\r\n");
        out.clear();
        // The client URI-decodes events: `%` must survive it.
        wrap(&mut out, Transport::EventSource, "", b"a[\"100%\"]");
        assert_eq!(out, b"data: a[\"100%25\"]\r\n\r\n");
        out.clear();
        wrap(&mut out, Transport::HtmlFile, "cb", frame);
        assert_eq!(out, b"<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n");
        out.clear();
        wrap(&mut out, Transport::JsonpPolling, "cb", OPEN);
        assert_eq!(out, b"cb(\"o\");\r\n");
    }

    #[test]
    fn preludes() {
        let xhr = prelude(Transport::XhrStreaming, "");
        assert_eq!(xhr.len(), 2049);
        assert!(xhr[..2048].iter().all(|&b| b == b'h') && xhr[2048] == b'\n');
        assert_eq!(prelude(Transport::EventSource, ""), b"\r\n");
        let html = String::from_utf8(prelude(Transport::HtmlFile, "callback")).unwrap();
        assert!(html.len() > 1024);
        assert!(html.trim().ends_with("</script>"));
        assert!(html.contains("var c = parent.callback;"));
        assert!(prelude(Transport::XhrPolling, "").is_empty());
    }

    #[test]
    fn callbacks_are_decoded_and_checked() {
        assert_eq!(callback(Some("c=%63allback")), Ok("callback".into()));
        assert_eq!(callback(Some("t=1&c=x")), Ok("x".into()));
        assert_eq!(callback(Some("callback=a.b_c-1")), Ok("a.b_c-1".into()));
        assert_eq!(callback(None), Err(CallbackError::Missing));
        assert_eq!(callback(Some("c=")), Err(CallbackError::Missing));
        assert_eq!(callback(Some("c=alert(1)")), Err(CallbackError::Invalid));
        assert_eq!(callback(Some("c=%3Cscript")), Err(CallbackError::Invalid));
    }

    #[test]
    fn jsonp_bodies() {
        assert_eq!(jsonp_payload(b"d=%5B%22x%22%5D", true), b"[\"x\"]");
        assert_eq!(jsonp_payload(b"d=", true), b"");
        assert_eq!(jsonp_payload(b"p=p", true), b"");
        assert_eq!(jsonp_payload(b"", true), b"");
        assert_eq!(jsonp_payload(b"[\"%61bc\"]", false), b"[\"%61bc\"]");
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"a+b%20c"), Some(b"a b c".to_vec()));
    }
}
