//! Where a request under a SockJS service's prefix goes (the URL scheme of the protocol).

/// A SockJS transport: how frames reach the client, and how its messages reach us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `{server}/{session}/websocket`: a WebSocket carrying SockJS frames.
    WebSocket,
    /// `xhr`: one frame (or batch of messages) per POST, then the response ends.
    XhrPolling,
    /// `xhr_streaming`: frames appended to one POST response.
    XhrStreaming,
    /// `eventsource`: frames as server-sent events.
    EventSource,
    /// `htmlfile`: frames as `<script>` calls into a callback, for old Internet Explorer.
    HtmlFile,
    /// `jsonp`: one callback call per GET.
    JsonpPolling,
    /// `xhr_send`: messages in, a JSON array in the body.
    XhrSend,
    /// `jsonp_send`: messages in, form-encoded (`d=...`) or raw JSON.
    JsonpSend,
}

impl Transport {
    fn from_name(name: &str) -> Option<Transport> {
        Some(match name {
            "websocket" => Transport::WebSocket,
            "xhr" => Transport::XhrPolling,
            "xhr_streaming" => Transport::XhrStreaming,
            "eventsource" => Transport::EventSource,
            "htmlfile" => Transport::HtmlFile,
            "jsonp" => Transport::JsonpPolling,
            "xhr_send" => Transport::XhrSend,
            "jsonp_send" => Transport::JsonpSend,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::XhrPolling => "xhr",
            Transport::XhrStreaming => "xhr_streaming",
            Transport::EventSource => "eventsource",
            Transport::HtmlFile => "htmlfile",
            Transport::JsonpPolling => "jsonp",
            Transport::XhrSend => "xhr_send",
            Transport::JsonpSend => "jsonp_send",
        }
    }

    /// A transport that receives frames (and so opens or attaches to a session).
    pub fn is_receiving(self) -> bool {
        !matches!(self, Transport::XhrSend | Transport::JsonpSend)
    }

    /// A receiving transport whose response stays open for several frames.
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            Transport::XhrStreaming | Transport::EventSource | Transport::HtmlFile
        )
    }

    /// The HTTP method it takes (`GET` or `POST`).
    pub fn method(self) -> &'static str {
        match self {
            Transport::WebSocket
            | Transport::EventSource
            | Transport::HtmlFile
            | Transport::JsonpPolling => "GET",
            _ => "POST",
        }
    }

    /// Answers CORS preflights (`OPTIONS`): the XHR transports.
    pub fn takes_options(self) -> bool {
        matches!(
            self,
            Transport::XhrPolling | Transport::XhrStreaming | Transport::XhrSend
        )
    }
}

/// What a path under a service's prefix names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The prefix itself, with or without a slash: the greeting.
    Greeting,
    /// `/info`: capabilities, entropy.
    Info,
    /// `/iframe.html` and its versioned names.
    Iframe,
    /// `/websocket`: a plain WebSocket, no SockJS framing.
    RawWebSocket,
    /// `/{server}/{session}/{transport}`.
    Session {
        server: &'a str,
        session: &'a str,
        transport: Transport,
    },
    NotFound,
}

/// The route of `path` if it lies under `prefix` (which does not end with a slash), else
/// `None`.
pub fn route<'a>(prefix: &str, path: &'a str) -> Option<Route<'a>> {
    let rest = path.strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None; // "/echoes" is not under "/echo"
    }
    Some(match rest {
        "" | "/" => Route::Greeting,
        "/info" => Route::Info,
        "/websocket" => Route::RawWebSocket,
        _ if is_iframe(rest) => Route::Iframe,
        _ => session(rest).unwrap_or(Route::NotFound),
    })
}

/// `/iframe.html`, `/iframe-0.1.2.html`, ...: lowercase letters, digits, `.`, `-` and `_`.
fn is_iframe(rest: &str) -> bool {
    rest.strip_prefix("/iframe")
        .and_then(|r| r.strip_suffix(".html"))
        .is_some_and(|v| {
            v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

fn session(rest: &str) -> Option<Route<'_>> {
    let mut parts = rest.strip_prefix('/')?.split('/');
    let (server, session, transport) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let valid = |s: &str| !s.is_empty() && !s.contains('.');
    if !valid(server) || !valid(session) {
        return None;
    }
    Some(Route::Session {
        server,
        session,
        transport: Transport::from_name(transport)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocols_urls() {
        assert_eq!(route("/echo", "/echo"), Some(Route::Greeting));
        assert_eq!(route("/echo", "/echo/"), Some(Route::Greeting));
        assert_eq!(route("/echo", "/echoes"), None);
        assert_eq!(route("/echo", "/other"), None);
        assert_eq!(route("/echo", "/echo/info"), Some(Route::Info));
        assert_eq!(route("/echo", "/echo/websocket"), Some(Route::RawWebSocket));
        for iframe in [
            "/iframe.html",
            "/iframe-a.html",
            "/iframe-.html",
            "/iframe-0.1.2.html",
            "/iframe-0.1.2abc-dirty.2144.html",
        ] {
            assert_eq!(route("", iframe), Some(Route::Iframe), "{iframe}");
        }
        for bad in [
            "/iframe.htm",
            "/iframe",
            "/IFRAME.HTML",
            "/IFRAME",
            "/iframe.HTML",
            "/iframe.xml",
            "/iframe-/.html",
            "/a",
            "/a.html",
            "//",
            "///",
            "/a/a",
            "/a/a/",
            "/a/",
        ] {
            assert_eq!(route("", bad), Some(Route::NotFound), "{bad}");
        }
        assert_eq!(
            route("/echo", "/echo/000/abc/xhr_streaming"),
            Some(Route::Session {
                server: "000",
                session: "abc",
                transport: Transport::XhrStreaming
            })
        );
        for good in ["/a/a", "/_/_", "/1/1", "/abcdefgh_i-j%20/abcdefg_i-j%20"] {
            let path = format!("{good}/xhr");
            assert!(
                matches!(route("", &path), Some(Route::Session { .. })),
                "{path}"
            );
        }
        for bad in ["//", "/a./a", "/a/a.", "/./.", "/", "///"] {
            let path = format!("{bad}/xhr");
            assert_eq!(route("", &path), Some(Route::NotFound), "{path}");
        }
        assert_eq!(route("", "/a/a/bogus"), Some(Route::NotFound));
    }
}
