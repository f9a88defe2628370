//! The chat's HTTP surface, as pure functions: (method, target, body) → [`HttpResponse`] (plus
//! the [`Effect`]s a `POST` causes).
//!
//! | route                  | methods         | answer                                           |
//! |------------------------|-----------------|--------------------------------------------------|
//! | `/`                    | GET, HEAD       | the room list page                               |
//! | `/rooms/{id}`          | GET, HEAD       | the room page (404 for an unknown room)          |
//! | `/static/{asset}`      | GET, HEAD       | `app.js`, `stomp.js`, `sockjs.js`, `style.css`, `favicon.svg` |
//! | `/api/rooms`           | GET, HEAD, POST | [`RoomSummary`] list; POST `{name}` → 201 room |
//! | `/api/rooms/{id}`      | GET, HEAD       | [`RoomDetail`], or 404 |
//! | `/ws`                  | (upgrade only)  | 426 for a plain request                          |
//!
//! Unknown paths are 404, known paths with other methods 405 with an `Allow` header. API errors
//! are JSON [`ErrorBody`]. The assets are compiled in from `chat/web/`.

use sockeye::handshake::Request;
use sockeye::server::HttpResponse;

use crate::rooms::{Chat, ChatError, CreateRoom, Effect, ErrorBody, Room, RoomDetail, RoomSummary};

pub const INDEX_HTML: &str = include_str!("../web/index.html");
pub const ROOM_HTML: &str = include_str!("../web/room.html");
pub const APP_JS: &str = include_str!("../web/app.js");
pub const STOMP_JS: &str = include_str!("../web/stomp.js");
pub const SOCKJS_JS: &str = include_str!("../web/sockjs.js");
pub const STYLE_CSS: &str = include_str!("../web/style.css");
pub const FAVICON_SVG: &str = include_str!("../web/favicon.svg");

/// Where the glue serves STOMP over WebSocket.
pub const WS_PATH: &str = "/ws";

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// The pages load only this origin's scripts, styles and sockets: a script injected into a
/// page would not run.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The largest `POST /api/rooms` body read.
const MAX_BODY: usize = 4096;

/// What the HTTP surface reads and changes: a [`Chat`], or an application's rooms spread over
/// several (see [`Chat::split`]).
pub trait Rooms {
    /// Every room, oldest first.
    fn summaries(&self) -> Vec<RoomSummary>;
    /// One room, members and history.
    fn detail(&self, id: &str) -> Option<RoomDetail>;
    /// Whether there is a room `id`.
    fn exists(&self, id: &str) -> bool;
    /// See [`Chat::create_room`].
    fn create_room(
        &mut self,
        name: &str,
        now_ms: u64,
    ) -> Result<(RoomSummary, Vec<Effect>), ChatError>;
}

impl Rooms for Chat {
    fn summaries(&self) -> Vec<RoomSummary> {
        Chat::summaries(self)
    }

    fn detail(&self, id: &str) -> Option<RoomDetail> {
        self.room(id).map(Room::detail)
    }

    fn exists(&self, id: &str) -> bool {
        self.room(id).is_some()
    }

    fn create_room(
        &mut self,
        name: &str,
        now_ms: u64,
    ) -> Result<(RoomSummary, Vec<Effect>), ChatError> {
        Chat::create_room(self, name, now_ms)
    }
}

/// What to send back, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub response: HttpResponse,
    /// For the glue, as for [`Chat::handle_app`]'s (a created room's `Persist`).
    pub effects: Vec<Effect>,
}

impl From<HttpResponse> for Reply {
    fn from(response: HttpResponse) -> Self {
        Reply {
            response,
            effects: Vec::new(),
        }
    }
}

/// Answers a plain HTTP request (the engine's `Handler::on_http`).
pub fn handle_request<R: Rooms + ?Sized>(
    chat: &mut R,
    req: &Request<'_, '_>,
    body: &[u8],
    now_ms: u64,
) -> Reply {
    handle(chat, req.method, req.target, body, now_ms)
}

/// Answers `method target` (the query, if any, is ignored) with `body`.
pub fn handle<R: Rooms + ?Sized>(
    chat: &mut R,
    method: &str,
    target: &str,
    body: &[u8],
    now_ms: u64,
) -> Reply {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let head = method == "HEAD";
    let mut reply = route(chat, method, path, body, now_ms);
    if head {
        reply.response.body.clear();
    }
    reply
}

fn route<R: Rooms + ?Sized>(
    chat: &mut R,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
) -> Reply {
    let get = matches!(method, "GET" | "HEAD");
    const GET: &str = "GET, HEAD";
    if let Some(rest) = path.strip_prefix("/api/") {
        return match (rest.split_once('/'), rest) {
            (None, "rooms") => match method {
                "GET" | "HEAD" => json(200, &chat.summaries()).into(),
                "POST" => create_room(chat, body, now_ms),
                _ => method_not_allowed("GET, HEAD, POST", true).into(),
            },
            (Some(("rooms", id)), _) if is_segment(id) => {
                if !get {
                    return method_not_allowed(GET, true).into();
                }
                match chat.detail(id) {
                    Some(detail) => json(200, &detail).into(),
                    None => api_error(404, &format!("no room {id:?}")).into(),
                }
            }
            _ => api_error(404, "not found").into(),
        };
    }
    let asset = match path {
        "/" => Some((HTML, INDEX_HTML)),
        "/static/app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "/static/stomp.js" => Some(("text/javascript; charset=utf-8", STOMP_JS)),
        "/static/sockjs.js" => Some(("text/javascript; charset=utf-8", SOCKJS_JS)),
        "/static/style.css" => Some(("text/css; charset=utf-8", STYLE_CSS)),
        "/static/favicon.svg" => Some(("image/svg+xml", FAVICON_SVG)),
        _ => None,
    };
    if let Some((content_type, text)) = asset {
        if !get {
            return method_not_allowed(GET, false).into();
        }
        return page(200, content_type, text).into();
    }
    if let Some(id) = path.strip_prefix("/rooms/") {
        if is_segment(id) {
            if !get {
                return method_not_allowed(GET, false).into();
            }
            return match chat.exists(id) {
                true => page(200, HTML, ROOM_HTML).into(),
                false => not_found_page().into(),
            };
        }
    }
    if path == WS_PATH {
        let mut r = HttpResponse::text(426, "this is the STOMP over WebSocket endpoint\n");
        r.headers.push(("Upgrade".into(), "websocket".into()));
        return r.into();
    }
    not_found_page().into()
}

/// One non-empty path segment.
fn is_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

fn create_room<R: Rooms + ?Sized>(chat: &mut R, body: &[u8], now_ms: u64) -> Reply {
    if body.len() > MAX_BODY {
        return api_error(400, &format!("body larger than {MAX_BODY} bytes")).into();
    }
    let request: CreateRoom = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return api_error(400, &format!("invalid JSON: {e}")).into(),
    };
    let Some(name) = request.name else {
        return api_error(400, "name is required").into();
    };
    match chat.create_room(&name, now_ms) {
        Ok((room, effects)) => {
            let mut response = json(201, &room);
            response
                .headers
                .push(("Location".into(), format!("/rooms/{}", room.id)));
            Reply { response, effects }
        }
        Err(e) => json(e.http_status(), &e.body(None)).into(),
    }
}

fn with_common(mut r: HttpResponse) -> HttpResponse {
    r.headers
        .push(("X-Content-Type-Options".into(), "nosniff".into()));
    r
}

/// A page or asset: revalidated on every use (`no-cache`), so a new build shows at once.
fn page(status: u16, content_type: &str, text: &str) -> HttpResponse {
    let mut r = with_common(HttpResponse::new(status, content_type, text));
    r.headers.push(("Cache-Control".into(), "no-cache".into()));
    if content_type == HTML {
        r.headers
            .push(("Content-Security-Policy".into(), CSP.into()));
        r.headers
            .push(("Referrer-Policy".into(), "same-origin".into()));
    }
    r
}

fn not_found_page() -> HttpResponse {
    page(
        404,
        HTML,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found · Sockeye Chat</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\"></head>\
         <body><main class=\"lobby\"><section class=\"card\"><h1>Not found</h1>\
         <p>There is nothing here. <a href=\"/\">See the rooms</a>.</p></section></main></body></html>\n",
    )
}

fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = with_common(HttpResponse::new(status, JSON, body));
    r.headers.push(("Cache-Control".into(), "no-store".into()));
    r
}

fn api_error(status: u16, message: &str) -> HttpResponse {
    json(status, &ErrorBody::new(message))
}

fn method_not_allowed(allow: &str, api: bool) -> HttpResponse {
    let mut r = if api {
        api_error(405, "method not allowed")
    } else {
        with_common(HttpResponse::text(405, "method not allowed\n"))
    };
    r.headers.push(("Allow".into(), allow.into()));
    r
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::rooms::{PersistOp, Room};

    const NOW: u64 = 1_700_000_000_000;

    fn call(chat: &mut Chat, method: &str, target: &str, body: &str) -> Reply {
        handle(chat, method, target, body.as_bytes(), NOW)
    }

    fn header<'a>(r: &'a HttpResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body_json(r: &HttpResponse) -> Value {
        assert_eq!(header(r, "content-type"), Some("application/json"), "{r:?}");
        serde_json::from_slice(&r.body).unwrap()
    }

    fn error_of(r: &HttpResponse) -> String {
        body_json(r)["error"].as_str().unwrap().to_owned()
    }

    fn chat_with_room() -> (Chat, String) {
        let mut chat = Chat::default();
        let r = call(&mut chat, "POST", "/api/rooms", r#"{"name":"General"}"#);
        assert_eq!(r.response.status, 201);
        (
            chat,
            body_json(&r.response)["id"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn pages_and_assets() {
        let (mut chat, room) = chat_with_room();
        let room_path = format!("/rooms/{room}");
        let cases = [
            ("/", "text/html; charset=utf-8", INDEX_HTML),
            (room_path.as_str(), "text/html; charset=utf-8", ROOM_HTML),
            ("/static/app.js", "text/javascript; charset=utf-8", APP_JS),
            (
                "/static/stomp.js",
                "text/javascript; charset=utf-8",
                STOMP_JS,
            ),
            (
                "/static/sockjs.js",
                "text/javascript; charset=utf-8",
                SOCKJS_JS,
            ),
            ("/static/style.css", "text/css; charset=utf-8", STYLE_CSS),
            ("/static/favicon.svg", "image/svg+xml", FAVICON_SVG),
        ];
        for (path, content_type, text) in cases {
            let r = call(&mut chat, "GET", path, "").response;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(header(&r, "content-type"), Some(content_type), "{path}");
            assert_eq!(header(&r, "cache-control"), Some("no-cache"), "{path}");
            assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
            assert_eq!(r.body, text.as_bytes(), "{path}");
            assert_eq!(
                header(&r, "content-security-policy").is_some(),
                content_type.starts_with("text/html"),
                "{path}"
            );
            let head = call(&mut chat, "HEAD", path, "").response;
            assert_eq!(head.status, 200);
            assert!(head.body.is_empty(), "HEAD has no body");
            assert_eq!(head.headers, r.headers);
            for method in ["POST", "PUT", "DELETE"] {
                let r = call(&mut chat, method, path, "").response;
                assert_eq!(r.status, 405, "{method} {path}");
                assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
            }
        }
        let r = call(&mut chat, "GET", "/?utm=x", "").response;
        assert_eq!(r.body, INDEX_HTML.as_bytes(), "the query is ignored");
    }

    #[test]
    fn unknown_pages_are_404() {
        let (mut chat, room) = chat_with_room();
        for path in [
            "/rooms/nope-1",
            "/rooms/",
            "/rooms",
            &format!("/rooms/{room}/x"),
            "/static/",
            "/static/secret.rs",
            "/static/../Cargo.toml",
            "/index.html",
            "/favicon.ico",
            "",
        ] {
            let r = call(&mut chat, "GET", path, "").response;
            assert_eq!(r.status, 404, "{path:?}");
            assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
            assert!(String::from_utf8_lossy(&r.body).contains("Not found"));
        }
        // Even a POST to a path that does not exist: 404, not 405.
        assert_eq!(call(&mut chat, "POST", "/nope", "").response.status, 404);
    }

    #[test]
    fn the_websocket_path_wants_an_upgrade() {
        let mut chat = Chat::default();
        let r = call(&mut chat, "GET", "/ws", "").response;
        assert_eq!(r.status, 426);
        assert_eq!(header(&r, "upgrade"), Some("websocket"));
    }

    #[test]
    fn list_rooms() {
        let mut chat = Chat::default();
        let r = call(&mut chat, "GET", "/api/rooms", "").response;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        assert_eq!(body_json(&r), json!([]));
        call(&mut chat, "POST", "/api/rooms", r#"{"name":"B room"}"#);
        call(&mut chat, "POST", "/api/rooms", r#"{"name":"A room"}"#);
        let r = call(&mut chat, "GET", "/api/rooms?fresh=1", "").response;
        assert_eq!(
            body_json(&r),
            json!([
                {"id": "b-room-1", "name": "B room", "created": NOW, "members": 0},
                {"id": "a-room-2", "name": "A room", "created": NOW, "members": 0},
            ])
        );
        let head = call(&mut chat, "HEAD", "/api/rooms", "").response;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }

    #[test]
    fn create_a_room() {
        let mut chat = Chat::default();
        let r = call(&mut chat, "POST", "/api/rooms", r#"{"name":"  Café ☕  "}"#);
        assert_eq!(r.response.status, 201);
        assert_eq!(header(&r.response, "location"), Some("/rooms/caf-1"));
        assert_eq!(
            body_json(&r.response),
            json!({"id": "caf-1", "name": "Café ☕", "created": NOW, "members": 0})
        );
        assert_eq!(
            r.effects,
            vec![Effect::Persist(PersistOp::CreateRoom {
                id: "caf-1".into(),
                name: "Café ☕".into(),
                created: NOW,
            })]
        );
        assert_eq!(
            chat.rooms().map(Room::name).collect::<Vec<_>>(),
            ["Café ☕"]
        );
    }

    #[test]
    fn bad_room_creations_are_explained() {
        let mut chat = Chat::new(crate::rooms::ChatConfig {
            max_rooms: 2,
            ..Default::default()
        });
        call(&mut chat, "POST", "/api/rooms", r#"{"name":"Taken"}"#);
        let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(65));
        let huge = format!(r#"{{"name":"x","pad":"{}"}}"#, "x".repeat(5000));
        let cases: Vec<(&str, u16, &str, Option<&str>)> = vec![
            (
                "",
                400,
                "invalid JSON: EOF while parsing a value at line 1 column 0",
                None,
            ),
            (
                "x=1",
                400,
                "invalid JSON: expected value at line 1 column 1",
                None,
            ),
            ("{}", 400, "name is required", None),
            (r#"{"name":null}"#, 400, "name is required", None),
            (
                r#"{"name":""}"#,
                400,
                "room name must not be empty",
                Some("invalid_room_name"),
            ),
            (
                r#"{"name":"   "}"#,
                400,
                "room name must not be empty",
                Some("invalid_room_name"),
            ),
            (
                &long,
                400,
                "room name must be at most 64 characters",
                Some("invalid_room_name"),
            ),
            (
                r#"{"name":"a\u0000b"}"#,
                400,
                "room name must not contain control characters",
                Some("invalid_room_name"),
            ),
            (
                r#"{"name":"taken"}"#,
                409,
                "a room named \"taken\" exists",
                Some("duplicate_room_name"),
            ),
            (&huge, 400, "body larger than 4096 bytes", None),
        ];
        for (body, status, error, code) in cases {
            let r = call(&mut chat, "POST", "/api/rooms", body);
            assert_eq!(r.response.status, status, "{body}");
            let v = body_json(&r.response);
            assert_eq!(v["error"], error, "{body}");
            assert_eq!(v["code"].as_str(), code, "{body}");
            assert!(r.effects.is_empty());
        }
        let r = call(&mut chat, "POST", "/api/rooms", r#"{"name":5}"#).response;
        assert_eq!(r.status, 400);
        assert!(
            error_of(&r).starts_with("invalid JSON: invalid type: integer `5`"),
            "{}",
            error_of(&r)
        );
        call(&mut chat, "POST", "/api/rooms", r#"{"name":"Second"}"#);
        let r = call(&mut chat, "POST", "/api/rooms", r#"{"name":"Third"}"#).response;
        assert_eq!(r.status, 409);
        assert_eq!(error_of(&r), "there are already 2 rooms");
    }

    #[test]
    fn room_detail() {
        let (mut chat, room) = chat_with_room();
        let join = crate::broker::AppMessage {
            session: 1,
            user: None,
            destination: "/chat.join".into(),
            headers: vec![],
            body: bytes::Bytes::from(format!(r#"{{"roomId":"{room}","sender":"<b>ann</b>"}}"#)),
        };
        chat.handle_app(&join, NOW + 1);
        let r = call(&mut chat, "GET", &format!("/api/rooms/{room}"), "").response;
        assert_eq!(r.status, 200);
        assert_eq!(
            body_json(&r),
            json!({
                "id": "general-1", "name": "General", "created": NOW, "members": ["<b>ann</b>"],
                "history": [{"id": 1, "roomId": "general-1", "type": "JOIN", "sender": "<b>ann</b>",
                             "message": "<b>ann</b> joined", "timestamp": NOW + 1}],
            })
        );
        let r = call(&mut chat, "GET", "/api/rooms/nope-7", "").response;
        assert_eq!(r.status, 404);
        assert_eq!(error_of(&r), "no room \"nope-7\"");
        let r = call(&mut chat, "DELETE", &format!("/api/rooms/{room}"), "").response;
        assert_eq!(r.status, 405);
        assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
        assert_eq!(error_of(&r), "method not allowed");
    }

    #[test]
    fn api_errors_are_json() {
        let mut chat = Chat::default();
        for (method, path, status) in [
            ("GET", "/api/", 404),
            ("GET", "/api/nope", 404),
            ("GET", "/api/rooms/", 404),
            ("GET", "/api/rooms/a/b", 404),
            ("POST", "/api/nope", 404),
            ("PUT", "/api/rooms", 405),
            ("DELETE", "/api/rooms", 405),
        ] {
            let r = call(&mut chat, method, path, "").response;
            assert_eq!(r.status, status, "{method} {path}");
            assert!(!error_of(&r).is_empty());
            if status == 405 {
                assert_eq!(header(&r, "allow"), Some("GET, HEAD, POST"));
            }
        }
    }

    #[test]
    fn handle_request_takes_the_engines_request() {
        let mut chat = Chat::default();
        let req = Request {
            method: "POST",
            target: "/api/rooms?x=y",
            version: 1,
            headers: &[],
        };
        let r = handle_request(&mut chat, &req, br#"{"name":"Lobby"}"#, NOW);
        assert_eq!(r.response.status, 201);
        assert_eq!(chat.rooms().len(), 1);
    }

    /// The pages keep to the rules the CSP and the escaping policy set.
    #[test]
    fn assets_keep_to_the_rules() {
        for (name, html) in [("index", INDEX_HTML), ("room", ROOM_HTML)] {
            assert!(
                html.contains(r#"<script src="/static/app.js" defer></script>"#),
                "{name}"
            );
            assert!(
                !html.contains("<script>"),
                "{name}: no inline scripts under the CSP"
            );
            assert!(
                !html.contains("style=\""),
                "{name}: no inline styles under the CSP"
            );
            assert!(!html.contains(" on"), "{name}: no inline handlers");
        }
        assert!(ROOM_HTML.contains(r#"<script src="/static/stomp.js" defer></script>"#));
        for (name, js) in [("app.js", APP_JS), ("stomp.js", STOMP_JS)] {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!js.contains(banned), "{name} uses {banned}");
            }
        }
        assert!(STOMP_JS.contains("['v12.stomp', 'v11.stomp', 'v10.stomp']"));
        assert!(APP_JS.contains("'/ws'"));
    }
}
