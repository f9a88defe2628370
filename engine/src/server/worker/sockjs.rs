//! SockJS on the loop: requests under a service's prefix, sessions that outlive the requests
//! that carry them, the receiving request attached to each, heart-beats and the disconnect
//! delay, and requests handed to the worker that owns their session.
//!
//! A SockJS session over HTTP has no socket of its own. Its messages wait in its [`SockOut`];
//! a receiving request (`xhr`, `xhr_streaming`, `eventsource`, `htmlfile`, `jsonp`) attached to
//! it takes them as frames: a polling request ends with the first frame, a streaming one stays
//! open up to the service's streaming limit. `xhr_send` and `jsonp_send` carry the client's
//! messages in. To the handler the session is a session like any other: the same callbacks,
//! `Session` sends (text only) and handles; its tags carry [`SOCKJS_KEY`] so that commands from
//! other threads find it.
//!
//! A session lives on the worker that saw its first request; the others hand its requests
//! over (the socket moves through the owner's inbox). The protocol's own URLs (greeting,
//! `/info`, the iframe page, CORS preflights) are answered wherever they land.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::sync::atomic::Ordering;

use slab::Slab;
use tracing::{debug, info};

use super::{Conn, Loop, Next, Phase};
use crate::driver::out::{Backlog, Cork};
use crate::driver::{Deadlines, Tag};
use crate::handshake::{self, Request};
use crate::server::handler::{Handler, Message, SessionError, Upgrading};
use crate::server::inbox::Command;
use crate::server::session::{Kind, Out, Session, SessionState, SockOut, Wire};
use crate::sockjs::frame::{self, Messages};
use crate::sockjs::json;
use crate::sockjs::{Route, Service, Transport};

/// Set in the key of a [`Tag`] that names a SockJS session (not a connection).
pub(crate) const SOCKJS_KEY: usize = 1 << (usize::BITS - 2);

/// Cache headers for what must never be cached.
const NO_CACHE: (&str, &str) = (
    "Cache-Control",
    "no-store, no-cache, must-revalidate, max-age=0",
);

/// One year, for what may be cached.
const ONE_YEAR: &str = "31536000";

/// A SockJS session over HTTP.
pub(super) struct SockSession<D> {
    gen: u32,
    service: usize,
    /// The service's prefix and the client's session id: its name in the owners' table.
    name: Box<str>,
    state: SessionState<D>,
    out: SockOut,
    /// The receiving request attached now: its connection's slot.
    receiver: Option<Tag>,
    /// The open frame went out.
    opened: bool,
    /// `on_backpressure` was called (its queue went over half the cap); cleared at the drain.
    congested: bool,
    /// Once the session is over: the close frame every later receiving request gets, until
    /// the session is forgotten.
    closed: Option<Vec<u8>>,
    /// Clock tick of the last moment a receiving request was attached.
    seen: u32,
    /// Clock tick of the last frame sent.
    sent: u32,
}

/// A receiving request attached to a session (boxed in [`Phase::Receiving`]).
pub(super) struct Receiving {
    session: Tag,
    transport: Transport,
    callback: Box<str>,
    /// Bytes of frames written into this response.
    sent: usize,
    /// The response head (and prelude) went out: only a streaming response has written it
    /// before its first frame.
    started: bool,
    chunked: bool,
    keep_alive: bool,
    /// Response head fields worked out from the request (CORS, cookie).
    headers: Vec<(String, String)>,
    backlog: Backlog,
}

/// The loop's SockJS state.
pub(super) struct SockJs<D> {
    services: Vec<Service>,
    sessions: Slab<SockSession<D>>,
    names: HashMap<Box<str>, usize>,
    /// Per service: heart-beats due and disconnect delays running.
    heartbeats: Vec<Deadlines>,
    disconnects: Vec<Deadlines>,
    next_gen: u32,
}

impl<D> SockJs<D> {
    pub fn new(services: &[Service]) -> Self {
        SockJs {
            services: services.to_vec(),
            sessions: Slab::new(),
            names: HashMap::new(),
            heartbeats: services
                .iter()
                .map(|s| Deadlines::new(s.heartbeat))
                .collect(),
            disconnects: services
                .iter()
                .map(|s| Deadlines::new(s.disconnect_delay))
                .collect(),
            next_gen: 0,
        }
    }

    /// The service `path` lies under, and where in it.
    pub fn route<'p>(&self, path: &'p str) -> Option<(usize, Route<'p>)> {
        self.services
            .iter()
            .enumerate()
            .find_map(|(i, s)| crate::sockjs::route::route(&s.prefix, path).map(|r| (i, r)))
    }

    /// The largest request body a request to `service` may carry.
    pub fn max_send(&self, service: usize) -> usize {
        self.services[service].max_send_bytes
    }

    /// The largest body any service takes.
    pub fn max_send_any(&self) -> usize {
        self.services
            .iter()
            .map(|s| s.max_send_bytes)
            .max()
            .unwrap_or(0)
    }

    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.heartbeats
            .iter()
            .chain(&self.disconnects)
            .filter_map(Deadlines::next)
            .min()
    }

    fn get(&self, tag: Tag) -> Option<&SockSession<D>> {
        self.sessions
            .get(tag.key & !SOCKJS_KEY)
            .filter(|s| s.gen == tag.gen)
    }

    fn get_mut(&mut self, tag: Tag) -> Option<&mut SockSession<D>> {
        self.sessions
            .get_mut(tag.key & !SOCKJS_KEY)
            .filter(|s| s.gen == tag.gen)
    }
}

fn tag_of<D>(key: usize, s: &SockSession<D>) -> Tag {
    Tag {
        key: key | SOCKJS_KEY,
        gen: s.gen,
    }
}

/// The CORS headers of a response to `req`: the origin echoed (`*` for none or `null`),
/// credentials allowed, requested headers echoed.
fn cors(req: &Request<'_, '_>) -> Vec<(String, String)> {
    let origin = match req.header_str("origin") {
        None | Some("null") | Some("") => "*",
        Some(o) => o,
    };
    let mut headers = vec![
        ("Access-Control-Allow-Origin".to_owned(), origin.to_owned()),
        (
            "Access-Control-Allow-Credentials".to_owned(),
            "true".to_owned(),
        ),
    ];
    if let Some(h) = req
        .header_str("access-control-request-headers")
        .filter(|h| !h.is_empty())
    {
        headers.push(("Access-Control-Allow-Headers".to_owned(), h.to_owned()));
    }
    headers
}

/// `JSESSIONID` for services that want it: the client's own value, else `dummy`.
fn cookie(service: &Service, req: &Request<'_, '_>) -> Option<(String, String)> {
    if !service.cookie_needed {
        return None;
    }
    let value = req
        .headers_named("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("JSESSIONID="))
        .unwrap_or("dummy");
    Some((
        "Set-Cookie".to_owned(),
        format!("JSESSIONID={value}; path=/"),
    ))
}

fn content_type(transport: Transport) -> &'static str {
    match transport {
        Transport::EventSource => "text/event-stream; charset=UTF-8",
        Transport::HtmlFile => "text/html; charset=UTF-8",
        _ => "application/javascript; charset=UTF-8",
    }
}

fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// A whole response to a request on a keep-alive capable connection.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn new(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn text(status: u16, body: &str) -> Self {
        let mut a = Answer::new(status);
        a.header("Content-Type", "text/plain; charset=UTF-8");
        a.body = body.as_bytes().to_vec();
        a
    }

    fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn write(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::new();
        handshake::write_response_with(
            &mut out,
            self.status,
            &pairs(&self.headers),
            &self.body,
            keep_alive,
        );
        out
    }
}

impl<D> Loop<D> {
    /// A request under a SockJS service's prefix (the head is parsed, the body, if any, is
    /// complete: `body`). `rest` is what followed it on the connection.
    #[allow(clippy::too_many_arguments)] // a request's parts, borrowed apart
    pub(super) fn sockjs_request<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        service: usize,
        route: Route<'_>,
        req: &Request<'_, '_>,
        raw: &[u8],
        body: &[u8],
        rest: &[u8],
        keep_alive: bool,
    ) -> Next {
        let svc = &self.sockjs.services[service];
        let answer = match route {
            Route::Greeting if req.method == "GET" => Answer::text(200, "Welcome to SockJS!\n"),
            Route::Info if req.method == "OPTIONS" => self.preflight(req, "OPTIONS, GET"),
            Route::Info if req.method == "GET" => {
                let mut entropy = [0u8; 4];
                crate::client::os_random(&mut entropy);
                let body = format!(
                    "{{\"websocket\":{},\"cookie_needed\":{},\"origins\":[\"*:*\"],\"entropy\":{}}}",
                    svc.websocket,
                    svc.cookie_needed,
                    u32::from_le_bytes(entropy)
                );
                let mut a = Answer::new(200);
                a.header("Content-Type", "application/json; charset=UTF-8");
                a.headers.push((NO_CACHE.0.into(), NO_CACHE.1.into()));
                a.headers.extend(cors(req));
                a.body = body.into_bytes();
                a
            }
            Route::Iframe if req.method == "GET" => {
                let page = frame::iframe_page(&svc.client_url);
                let etag = format!("\"{:016x}\"", fnv1a(page.as_bytes()));
                if req.header_str("if-none-match") == Some(etag.as_str()) {
                    let mut a = Answer::new(304);
                    a.header("ETag", &etag);
                    a
                } else {
                    let mut a = Answer::new(200);
                    a.header("Content-Type", "text/html; charset=UTF-8")
                        .header("Cache-Control", &format!("public, max-age={ONE_YEAR}"))
                        .header("Expires", "Thu, 31 Dec 2037 23:55:55 GMT")
                        .header("ETag", &etag);
                    a.body = page.into_bytes();
                    a
                }
            }
            Route::RawWebSocket
            | Route::Session {
                transport: Transport::WebSocket,
                ..
            } => {
                if req.method != "GET" {
                    let mut a = Answer::new(405);
                    a.header("Allow", "GET");
                    a
                } else if !svc.websocket {
                    Answer::text(404, "not found\n")
                } else if !req.is_websocket() {
                    Answer::text(400, "Can \"Upgrade\" only to \"WebSocket\".\n")
                } else if !req.has_token("connection", "upgrade") {
                    Answer::text(400, "\"Connection\" must be \"Upgrade\".\n")
                } else {
                    let (session, transport) = match route {
                        Route::Session { .. } => (true, Some(Transport::WebSocket)),
                        _ => (false, None),
                    };
                    let sockjs = Some((svc.prefix.clone(), transport));
                    let kind = if session {
                        Kind::SockJsWebSocket
                    } else {
                        Kind::WebSocket
                    };
                    return self.upgrade_as(
                        handler,
                        key,
                        req,
                        &raw[raw.len() - rest.len()..],
                        sockjs,
                        kind,
                    );
                }
            }
            Route::Session {
                session, transport, ..
            } => {
                if req.method == "OPTIONS" && transport.takes_options() {
                    self.preflight(req, "OPTIONS, POST")
                } else if req.method != transport.method() {
                    Answer::text(404, "not found\n")
                } else {
                    return self.session_request(
                        handler, key, service, session, transport, req, raw, body, rest, keep_alive,
                    );
                }
            }
            _ => Answer::text(404, "not found\n"),
        };
        self.answer(key, &answer.write(keep_alive), keep_alive, rest)
    }

    fn preflight(&self, req: &Request<'_, '_>, methods: &str) -> Answer {
        let mut a = Answer::new(204);
        a.header("Cache-Control", &format!("public, max-age={ONE_YEAR}"))
            .header("Expires", "Thu, 31 Dec 2037 23:55:55 GMT")
            .header("Access-Control-Max-Age", ONE_YEAR)
            .header("Access-Control-Allow-Methods", methods);
        a.headers.extend(cors(req));
        a
    }

    /// A request for a session: find it (here, or on the worker that owns it), make it, attach
    /// to it or hand it messages.
    #[allow(clippy::too_many_arguments)]
    fn session_request<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        service: usize,
        session: &str,
        transport: Transport,
        req: &Request<'_, '_>,
        raw: &[u8],
        body: &[u8],
        rest: &[u8],
        keep_alive: bool,
    ) -> Next {
        let name: Box<str> = format!("{}/{session}", self.sockjs.services[service].prefix).into();
        let local = self.sockjs.names.get(&name).copied();
        if local.is_none() {
            let owners = self.env.shared.sockjs_owners.lock();
            let owner = owners
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .copied();
            if let Some(owner) = owner.filter(|&w| w != self.env.index) {
                return self.hand_over(key, owner, &raw[..raw.len() - rest.len()], rest);
            }
        }
        let svc = self.sockjs.services[service].clone();
        let origin = req
            .header("origin")
            .map(|o| std::str::from_utf8(o).unwrap_or(""));
        if !self.env.config.handshake.allowed_origins.allows(origin) {
            info!(peer = %self.conns[key].peer(), origin = origin.unwrap_or(""), "SockJS request refused: origin not allowed");
            let answer = Answer::text(403, "origin not allowed\n");
            return self.answer(key, &answer.write(keep_alive), keep_alive, rest);
        }
        let mut headers = cors(req);
        headers.extend(cookie(&svc, req));
        if !transport.is_receiving() {
            let Some(skey) = local.filter(|&k| self.sockjs.sessions[k].closed.is_none()) else {
                // With the CORS headers, so that a cross-origin page sees the 404 itself.
                let mut answer = Answer::text(404, "not found\n");
                answer.headers.extend(headers);
                return self.answer(key, &answer.write(keep_alive), keep_alive, rest);
            };
            let answer = self.messages_in(handler, skey, transport, req, body, headers);
            return self.answer(key, &answer.write(keep_alive), keep_alive, rest);
        }
        let callback = match transport {
            Transport::JsonpPolling | Transport::HtmlFile => match frame::callback(req.query()) {
                Ok(c) => c,
                Err(e) => {
                    let answer = Answer::text(500, e.message());
                    return self.answer(key, &answer.write(keep_alive), keep_alive, rest);
                }
            },
            _ => String::new(),
        };
        let skey = match local {
            Some(k) => k,
            None => match self.new_session(handler, key, service, name, transport, req) {
                Ok(k) => k,
                Err(answer) => {
                    return self.answer(key, &answer.write(keep_alive), keep_alive, rest)
                }
            },
        };
        // Whatever followed a receiving request is dropped: a client waits for its answer.
        let chunked = req.version == 1 && transport.is_streaming();
        let receiving = Receiving {
            session: tag_of(skey, &self.sockjs.sessions[skey]),
            transport,
            callback: callback.into(),
            sent: 0,
            started: false,
            chunked,
            keep_alive: keep_alive && (chunked || !transport.is_streaming()),
            headers,
            backlog: Backlog::default(),
        };
        self.attach(handler, key, skey, receiving)
    }

    /// Makes a session for a first receiving request: the handler decides.
    fn new_session<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        service: usize,
        name: Box<str>,
        transport: Transport,
        req: &Request<'_, '_>,
    ) -> Result<usize, Answer> {
        let prefix = self.sockjs.services[service].prefix.clone();
        let mut upgrading = Upgrading {
            protocol: None,
            headers: Vec::new(),
            peer: self.conns[key].peer().0,
            sockjs: Some((prefix, Some(transport))),
            deflate: None,
        };
        let data = handler.on_upgrade(req, &mut upgrading).map_err(|r| {
            info!(peer = %self.conns[key].peer(), status = r.status, reason = %r.reason, "SockJS session refused by the application");
            Answer::text(r.status, &format!("{}\n", r.reason))
        })?;
        self.env
            .shared
            .sockjs_owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), self.env.index);
        self.next_id += 1;
        self.sockjs.next_gen = self.sockjs.next_gen.wrapping_add(1);
        let tick = self.clock.tick(self.now);
        let skey = self.sockjs.sessions.insert(SockSession {
            gen: self.sockjs.next_gen,
            service,
            name: name.clone(),
            state: SessionState {
                id: self.next_id,
                tx: crate::connection::Sender::server(),
                backlog: Backlog::default(),
                protocol: None,
                close: None,
                kind: Kind::SockJs,
                flow: std::cell::OnceCell::new(),
                data,
            },
            out: SockOut::default(),
            receiver: None,
            opened: false,
            congested: false,
            closed: None,
            seen: tick,
            sent: tick,
        });
        self.sockjs.names.insert(name, skey);
        self.env
            .counters()
            .sockjs_sessions
            .fetch_add(1, Ordering::Relaxed);
        debug!(peer = %self.conns[key].peer(), transport = transport.name(), "SockJS session open");
        Ok(skey)
    }

    /// `xhr_send` / `jsonp_send`: the client's messages, to the handler.
    fn messages_in<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        skey: usize,
        transport: Transport,
        req: &Request<'_, '_>,
        body: &[u8],
        headers: Vec<(String, String)>,
    ) -> Answer {
        let payload = match transport {
            Transport::JsonpSend => {
                let form = req
                    .header_str("content-type")
                    .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
                frame::jsonp_payload(body, form)
            }
            _ => body.to_vec(),
        };
        let messages = match json::parse_messages(&payload, false) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "SockJS: bad payload");
                let mut a = Answer::text(500, &e.to_string());
                a.headers.extend(headers);
                return a;
            }
        };
        let tag = tag_of(skey, &self.sockjs.sessions[skey]);
        for text in &messages {
            let Some(s) = self.sockjs.get_mut(tag) else {
                break;
            };
            if s.state.tx.is_close_sent() {
                break;
            }
            let mut session = sock_parts(s, &mut self.cork, &self.env, tag);
            handler.on_message(&mut session, Message::Text(text));
        }
        self.sock_settle(handler, tag);
        let mut a = match transport {
            Transport::JsonpSend => {
                let mut a = Answer::text(200, "ok");
                a.headers.push((NO_CACHE.0.into(), NO_CACHE.1.into()));
                a
            }
            _ => {
                let mut a = Answer::new(204);
                a.header("Content-Type", "text/plain; charset=UTF-8");
                a.headers.push((NO_CACHE.0.into(), NO_CACHE.1.into()));
                a
            }
        };
        a.headers.extend(headers);
        a
    }

    /// Attaches a receiving request to a session (or answers it "another connection still
    /// open"), then sends what is due.
    fn attach<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        skey: usize,
        mut receiving: Receiving,
    ) -> Next {
        let gen = self.conns[key].gen;
        let conn_tag = Tag { key, gen };
        let busy = {
            let s = &self.sockjs.sessions[skey];
            s.receiver
                .is_some_and(|r| r != conn_tag && self.receiver_alive(r, skey))
        };
        if busy {
            // Refused, and the session left as it is.
            receiving.session = Tag {
                key: usize::MAX,
                gen: 0,
            };
            self.conns[key].phase = Phase::Receiving(Box::new(receiving));
            let frame = frame::close(2010, "Another connection still open");
            return self.send_frame(key, &frame, true);
        }
        let service = self.sockjs.sessions[skey].service;
        let tick = self.clock.tick(self.now);
        {
            let s = &mut self.sockjs.sessions[skey];
            s.receiver = Some(conn_tag);
            s.seen = tick;
            s.out.receiving = receiving.transport.is_streaming();
        }
        let tag = tag_of(skey, &self.sockjs.sessions[skey]);
        self.sockjs.heartbeats[service].arm(self.now, tag);
        self.conns[key].phase = Phase::Receiving(Box::new(receiving));
        if self.start_streaming(key).is_err() {
            self.receiver_gone(handler, key);
            return Next::Drop;
        }
        let s = &mut self.sockjs.sessions[skey];
        if s.closed.is_some() {
            // Over: what it had queued, then the close frame, to every request until the
            // session is forgotten.
            return self.send_closing(key, tag);
        }
        if !s.opened {
            s.opened = true;
            let next = self.send_frame(key, frame::OPEN, false);
            if let Next::Drop = next {
                self.receiver_gone(handler, key);
                return Next::Drop;
            }
            self.sock_open(handler, tag);
        }
        self.sock_settle(handler, tag);
        self.receiving_next(key)
    }

    /// Whether the receiving request `r` of session `skey` is still attached and alive.
    fn receiver_alive(&self, r: Tag, skey: usize) -> bool {
        self.conns.get(r.key).is_some_and(|c| {
            c.gen == r.gen
                && matches!(&c.phase, Phase::Receiving(rx) if rx.session.key & !SOCKJS_KEY == skey)
        })
    }

    /// `on_open` for a session whose open frame went out.
    fn sock_open<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        let Some(s) = self.sockjs.get_mut(tag) else {
            return;
        };
        let mut session = sock_parts(s, &mut self.cork, &self.env, tag);
        handler.on_open(&mut session);
    }

    /// A streaming response's head and prelude, written when it attaches.
    fn start_streaming(&mut self, key: usize) -> io::Result<()> {
        let conn = &mut self.conns[key];
        let Phase::Receiving(rx) = &mut conn.phase else {
            return Ok(());
        };
        if !rx.transport.is_streaming() || rx.started {
            return Ok(());
        }
        rx.started = true;
        let mut head = Vec::new();
        let mut headers = pairs(&rx.headers);
        headers.push(("Content-Type", content_type(rx.transport)));
        headers.push(NO_CACHE);
        if rx.chunked {
            headers.push(("Transfer-Encoding", "chunked"));
        }
        handshake::write_head(&mut head, 200, &headers, None, rx.keep_alive);
        let prelude = frame::prelude(rx.transport, &rx.callback);
        self.cork.extend(&head);
        push_chunk(&mut self.cork, rx.chunked, &prelude);
        self.cork.flush_into(&mut conn.stream, &mut rx.backlog)
    }

    /// Sends a frame to the receiving request on connection `key`; a polling request (or one
    /// `last` frame) ends the response, a streaming one ends at its limit.
    fn send_frame(&mut self, key: usize, frame_bytes: &[u8], last: bool) -> Next {
        let tick = self.clock.tick(self.now);
        // A streaming response streams even a single frame (a refusal, a close): the client
        // reads the prelude, then the frame.
        if self.start_streaming(key).is_err() {
            return Next::Drop;
        }
        let conn = &mut self.conns[key];
        let Phase::Receiving(rx) = &mut conn.phase else {
            return Next::Keep;
        };
        if rx.sent == usize::MAX {
            return Next::Keep; // its response has ended: the frame waits for the next one
        }
        let mut wrapped = Vec::with_capacity(frame_bytes.len() + 16);
        if !rx.transport.is_streaming() {
            // A polling response: whole, with the frame as its body.
            let mut body = frame::prelude(rx.transport, &rx.callback);
            frame::wrap(&mut body, rx.transport, &rx.callback, frame_bytes);
            let mut headers = pairs(&rx.headers);
            headers.push(("Content-Type", content_type(rx.transport)));
            headers.push(NO_CACHE);
            handshake::write_response_with(&mut wrapped, 200, &headers, &body, rx.keep_alive);
            rx.started = true;
            rx.sent = usize::MAX; // ended
        } else {
            let mut body = Vec::with_capacity(frame_bytes.len() + 16);
            frame::wrap(&mut body, rx.transport, &rx.callback, frame_bytes);
            push_chunk_vec(&mut wrapped, rx.chunked, &body);
            rx.sent = rx.sent.saturating_add(body.len());
        }
        if let Some(s) = self.sockjs.get_mut(rx.session) {
            s.sent = tick;
        }
        let service_limit = self.sockjs.get(rx.session).map_or(usize::MAX, |s| {
            self.sockjs.services[s.service].streaming_limit
        });
        let ends = last || rx.sent >= service_limit;
        if ends && rx.transport.is_streaming() && rx.sent != usize::MAX && rx.chunked {
            wrapped.extend_from_slice(b"0\r\n\r\n");
        }
        if ends {
            rx.sent = usize::MAX;
        }
        self.cork.extend(&wrapped);
        if self
            .cork
            .flush_into(&mut conn.stream, &mut rx.backlog)
            .is_err()
        {
            return Next::Drop;
        }
        Next::Keep
    }

    /// After a receiving request sent something: if its response ended, detach it and go on
    /// with the connection (keep-alive) or let it go.
    fn receiving_next(&mut self, key: usize) -> Next {
        let Some(conn) = self.conns.get_mut(key) else {
            return Next::Drop;
        };
        let Phase::Receiving(rx) = &mut conn.phase else {
            return Next::Keep;
        };
        if rx.sent != usize::MAX {
            return Next::Keep;
        }
        let (session, keep_alive) = (rx.session, rx.keep_alive && rx.backlog.is_empty());
        let backlog = std::mem::take(&mut rx.backlog);
        self.detach(key, session);
        if keep_alive {
            self.keep_alive(key, Vec::new());
            Next::Keep
        } else {
            let conn = &mut self.conns[key];
            conn.phase = Phase::Linger {
                backlog,
                shut: false,
            };
            self.timers.closes.arm(self.now, Tag { key, gen: conn.gen });
            self.serve_linger(key)
        }
    }

    /// The session no longer has connection `key` as its receiving request.
    fn detach(&mut self, key: usize, session: Tag) {
        let gen = self.conns.get(key).map_or(0, |c| c.gen);
        let tick = self.clock.tick(self.now);
        let now = self.now;
        if let Some(s) = self.sockjs.get_mut(session) {
            if s.receiver == Some(Tag { key, gen }) {
                s.receiver = None;
                s.out.receiving = false;
                s.seen = tick;
                let service = s.service;
                self.sockjs.disconnects[service].arm(now, session);
            }
        }
    }

    /// Serves a connection with a receiving request: writes its backlog, notices the client
    /// going away.
    pub(super) fn serve_receiving<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        readable: bool,
    ) -> Next {
        let conn = &mut self.conns[key];
        let Phase::Receiving(rx) = &mut conn.phase else {
            return Next::Keep;
        };
        if rx.backlog.flush(&mut conn.stream).is_err() {
            self.receiver_gone(handler, key);
            return Next::Drop;
        }
        if readable {
            // A client that waits for its answer sends nothing; EOF or an error means it went
            // away (what it may have sent meanwhile is not read).
            loop {
                match conn.stream.read(&mut self.buf) {
                    Ok(0) => {
                        self.receiver_gone(handler, key);
                        return Next::Drop;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.receiver_gone(handler, key);
                        return Next::Drop;
                    }
                }
            }
        }
        let Phase::Receiving(rx) = &self.conns[key].phase else {
            return Next::Keep;
        };
        let session = rx.session;
        if rx.backlog.is_empty() && rx.sent != usize::MAX {
            if let Some(s) = self.sockjs.get_mut(session) {
                s.out.receiving = rx.transport.is_streaming();
            }
            self.sock_settle(handler, session);
        }
        self.receiving_next(key)
    }

    /// The client of a receiving request went away while it was attached: the session is
    /// interrupted (the protocol's 1002).
    pub(super) fn receiver_gone<H: Handler<Data = D>>(&mut self, handler: &mut H, key: usize) {
        let Some(Phase::Receiving(rx)) = self.conns.get(key).map(|c| &c.phase) else {
            return;
        };
        let session = rx.session;
        let attached = self
            .sockjs
            .get(session)
            .is_some_and(|s| s.receiver.is_some_and(|r| r.key == key));
        if !attached {
            return;
        }
        self.detach(key, session);
        debug!(peer = %self.conns[key].peer(), "SockJS receiving request interrupted");
        self.sock_end(
            handler,
            session,
            1002,
            "Connection interrupted",
            Some(SessionError::Dropped),
        );
    }

    /// After work on a session (a callback, commands, a timer): its close, messages and
    /// drain go out to the receiving request, if one is attached.
    pub(super) fn sock_settle<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        self.sock_pressure(handler, tag);
        for _ in 0..crate::driver::out::DRAIN_ROUNDS {
            let Some(s) = self.sockjs.get_mut(tag) else {
                return;
            };
            // The application closed it: the close frame, then on_close.
            if s.state.tx.is_close_sent() && s.closed.is_none() {
                let (code, reason) = s
                    .state
                    .close
                    .as_deref()
                    .map_or((1000, "Normal closure".into()), |(c, r)| (*c, r.clone()));
                self.sock_end(handler, tag, code, &reason, None);
                return;
            }
            let receiver = s.receiver.filter(|r| {
                self.conns.get(r.key).is_some_and(|c| {
                    c.gen == r.gen
                        && matches!(&c.phase, Phase::Receiving(rx)
                            if rx.backlog.is_empty() && rx.sent != usize::MAX)
                })
            });
            let s = self.sockjs.get_mut(tag).expect("checked above");
            if let Some(r) = receiver {
                if !s.out.messages.is_empty() {
                    let frame = s.out.messages.take_frame();
                    if let Next::Drop = self.send_frame(r.key, &frame, false) {
                        self.receiver_gone(handler, r.key);
                        self.remove(r.key);
                        return;
                    }
                    if let Next::Drop = self.receiving_next(r.key) {
                        self.remove(r.key);
                    }
                }
            }
            let Some(s) = self.sockjs.get_mut(tag) else {
                return;
            };
            let idle = s.out.messages.is_empty();
            if let Some(flow) = s.state.flow.get() {
                flow.settled(s.out.messages.len());
            }
            if !(idle && s.state.backlog.owes_drain()) {
                return;
            }
            s.state.backlog.settle_drain();
            s.congested = false;
            let mut session = sock_parts(s, &mut self.cork, &self.env, tag);
            handler.on_drain(&mut session);
        }
    }

    /// As for a socket: messages refused at the cap are reported (`on_overflow`, where the
    /// application may let the session go), and a queue over half the cap once
    /// (`on_backpressure`, with an `on_drain` owed when it empties).
    fn sock_pressure<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        let cap = self.env.config.max_backpressure;
        let Some(s) = self.sockjs.get_mut(tag) else {
            return;
        };
        if s.closed.is_some() {
            return;
        }
        let dropped = s.state.backlog.take_dropped();
        let congested = !s.congested && s.out.messages.len() > cap / 2;
        if dropped == 0 && !congested {
            return;
        }
        let closing = s.state.tx.is_close_sent();
        let mut session = sock_parts(s, &mut self.cork, &self.env, tag);
        if dropped > 0 {
            handler.on_overflow(&mut session, dropped);
            if !closing && session.state.tx.is_close_sent() {
                // The application let the session go for it (a slow consumer).
                crate::server::Counters::bump(&self.env.counters().overflow_closes);
            }
        }
        if congested && !session.state.tx.is_close_sent() {
            s.congested = true;
            s.state.backlog.owe_drain();
            let mut session = sock_parts(s, &mut self.cork, &self.env, tag);
            handler.on_backpressure(&mut session);
        }
    }

    /// Ends a session: what it had queued (when it ended well) and its close frame to the
    /// receiving request (the close frame to every later one, until it is forgotten),
    /// `on_error` if it ended badly, `on_close`.
    fn sock_end<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        tag: Tag,
        code: u16,
        reason: &str,
        error: Option<SessionError>,
    ) {
        let Some(s) = self.sockjs.get_mut(tag) else {
            return;
        };
        if s.closed.is_some() {
            return;
        }
        s.closed = Some(frame::close(code, reason));
        s.state.tx.mark_closed();
        if error.is_some() {
            // Ended badly (nobody came for them): what was queued is lost with it.
            s.out.messages = Messages::default();
        }
        let receiver = s.receiver;
        let mut session = sock_parts(s, &mut self.cork, &self.env, tag);
        if let Some(error) = &error {
            handler.on_error(&mut session, error);
        }
        handler.on_close(&mut session, code, reason);
        if let Some(flow) = s.state.flow.get() {
            flow.end();
        }
        if let Some(r) = receiver {
            if self.conns.get(r.key).is_some_and(|c| c.gen == r.gen) {
                if let Next::Drop = self.send_closing(r.key, tag) {
                    self.remove(r.key);
                }
            }
        }
        // Answered with its close frame until the disconnect delay has passed.
        if let Some(s) = self.sockjs.get_mut(tag) {
            if s.receiver.is_none() {
                let service = s.service;
                self.sockjs.disconnects[service].arm(self.now, tag);
            }
        }
    }

    /// To the receiving request on `key` of a session that is over: what it had queued, then
    /// (if the response goes on) the close frame. A polling request takes the messages and
    /// the next one the close frame.
    fn send_closing(&mut self, key: usize, tag: Tag) -> Next {
        let Some(s) = self.sockjs.get_mut(tag) else {
            return Next::Keep;
        };
        let Some(close) = s.closed.clone() else {
            return Next::Keep;
        };
        if !s.out.messages.is_empty() {
            let frame = s.out.messages.take_frame();
            if let Next::Drop = self.send_frame(key, &frame, false) {
                return Next::Drop;
            }
        }
        let ended = matches!(&self.conns[key].phase, Phase::Receiving(rx) if rx.sent == usize::MAX);
        if !ended {
            if let Next::Drop = self.send_frame(key, &close, true) {
                return Next::Drop;
            }
        }
        self.receiving_next(key)
    }

    /// Forgets a session (it ended, and no request came for the disconnect delay).
    fn sock_forget(&mut self, tag: Tag) {
        let key = tag.key & !SOCKJS_KEY;
        if self.sockjs.get(tag).is_none() {
            return;
        }
        let s = self.sockjs.sessions.remove(key);
        self.sockjs.names.remove(&s.name);
        self.env
            .counters()
            .sockjs_sessions
            .fetch_sub(1, Ordering::Relaxed);
        let mut owners = self
            .env
            .shared
            .sockjs_owners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if owners.get(&s.name) == Some(&self.env.index) {
            owners.remove(&s.name);
        }
    }

    /// Heart-beats and disconnect delays that came due.
    pub(super) fn sockjs_expire<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        let now = self.now;
        for service in 0..self.sockjs.services.len() {
            let every = self.sockjs.services[service].heartbeat;
            while let Some(tag) = self.sockjs.heartbeats[service].pop_expired(now) {
                let Some(s) = self.sockjs.get(tag) else {
                    continue;
                };
                let Some(r) = s.receiver else {
                    continue;
                };
                let quiet = self.clock.since(s.sent, now);
                if quiet < every {
                    self.sockjs.heartbeats[service].arm_at(now + (every - quiet), tag);
                    continue;
                }
                if s.closed.is_none() {
                    if let Next::Drop = self.send_frame(r.key, frame::HEARTBEAT, false) {
                        self.receiver_gone(handler, r.key);
                        self.remove(r.key);
                        continue;
                    }
                    if let Next::Drop = self.receiving_next(r.key) {
                        self.remove(r.key);
                    }
                }
                if self.sockjs.get(tag).is_some_and(|s| s.receiver.is_some()) {
                    self.sockjs.heartbeats[service].arm(now, tag);
                }
            }
            let delay = self.sockjs.services[service].disconnect_delay;
            while let Some(tag) = self.sockjs.disconnects[service].pop_expired(now) {
                let Some(s) = self.sockjs.get(tag) else {
                    continue;
                };
                if s.receiver.is_some() {
                    continue;
                }
                let away = self.clock.since(s.seen, now);
                if away < delay {
                    self.sockjs.disconnects[service].arm_at(now + (delay - away), tag);
                    continue;
                }
                if s.closed.is_none() {
                    debug!("SockJS session timed out: no receiving request");
                    self.sock_end(
                        handler,
                        tag,
                        1006,
                        "Session timed out",
                        Some(SessionError::Dropped),
                    );
                }
                self.sock_forget(tag);
            }
        }
    }

    /// Commands from other threads for a SockJS session: applied like a connection's.
    pub(super) fn sock_session<'a>(&'a mut self, tag: Tag) -> Option<Session<'a, D>> {
        let s = self
            .sockjs
            .sessions
            .get_mut(tag.key & !SOCKJS_KEY)
            .filter(|s| s.gen == tag.gen && s.closed.is_none())?;
        Some(sock_parts(s, &mut self.cork, &self.env, tag))
    }

    /// Graceful shutdown: every SockJS session is closed with 1001.
    pub(super) fn sockjs_shutdown<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        let tags: Vec<Tag> = self
            .sockjs
            .sessions
            .iter()
            .map(|(k, s)| tag_of(k, s))
            .collect();
        for tag in tags {
            self.sock_end(handler, tag, 1001, "Server shutting down", None);
            self.sock_forget(tag);
        }
    }

    /// Hands connection `key`, with the request it carried (`request`) and what followed
    /// (`rest`), to worker `owner`, whose session it is for.
    fn hand_over(&mut self, key: usize, owner: usize, request: &[u8], rest: &[u8]) -> Next {
        let inbox = self
            .env
            .shared
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .cloned();
        let Some(inbox) = inbox else {
            return Next::Drop;
        };
        let Some(mut conn) = self.conns.try_remove(key) else {
            return Next::Drop;
        };
        if self.registry.deregister(&mut conn.stream).is_err() {
            self.release();
            return Next::Drop;
        }
        let mut head = request.to_vec();
        head.extend_from_slice(rest);
        let Conn { stream, .. } = conn;
        inbox.post_control(Command::Adopt { stream, head });
        Next::Handed
    }

    /// A connection another worker handed over: registered here, its request served.
    pub(super) fn adopt(&mut self, mut stream: crate::driver::transport::Transport, head: Vec<u8>) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if self
            .registry
            .register(
                &mut stream,
                mio::Token(key),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )
            .is_err()
        {
            self.release();
            return;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let since = self.clock.tick(self.now);
        entry.insert(Conn {
            stream,
            gen: self.next_gen,
            phase: Phase::Handshake { head, since },
        });
        self.timers.handshakes.arm(
            self.now,
            Tag {
                key,
                gen: self.next_gen,
            },
        );
        self.pending.push(key);
        self.env
            .counters()
            .handed_over
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends `bytes` as one chunk (chunked encoding) or as they are.
/// The handler's view of a SockJS session (borrowing the loop's cork and environment).
fn sock_parts<'a, D>(
    s: &'a mut SockSession<D>,
    cork: &'a mut Cork,
    env: &'a crate::server::session::Env,
    tag: Tag,
) -> Session<'a, D> {
    Session {
        state: &mut s.state,
        out: Out {
            cork,
            wire: Wire::SockJs(&mut s.out),
            env,
            tag,
        },
    }
}

fn push_chunk(cork: &mut Cork, chunked: bool, bytes: &[u8]) {
    let mut out = Vec::with_capacity(bytes.len() + 12);
    push_chunk_vec(&mut out, chunked, bytes);
    cork.extend(&out);
}

fn push_chunk_vec(out: &mut Vec<u8>, chunked: bool, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(bytes);
    }
}

/// FNV-1a of `bytes`: the iframe page's ETag.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
