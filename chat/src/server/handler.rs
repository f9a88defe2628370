//! The engine side: [`StompServer`] (workers, hub and heart-beat thread), and
//! [`StompHandler`], the engine handler that feeds each session's bytes to the hub.

use std::net::SocketAddr;
use std::sync::Arc;

use sockeye::handshake::Request;
use sockeye::server::{
    Handler, HttpResponse, Message, Rejection, Session, Task, TaskOut, Upgrading,
};
use tracing::{debug, info, warn};

use super::metrics::{self, Counter};
use super::{heartbeat, ops, Application, Hub, StompConfig, SUB_PROTOCOLS};
use crate::link::{Batch, Link};

/// Frames (at most) and input bytes (about) of a STOMP-over-TCP read handled per broker lock,
/// between checks of the session's read pause: small enough that a publisher whose fan-out
/// fills an inbox, or reaches a subscriber that is behind, stops within a few kilobytes per
/// subscriber; large enough that the lock is not taken per frame.
const STREAM_BATCH: Batch = Batch {
    frames: 64,
    bytes: 16 << 10,
};

/// A running STOMP server: the engine's workers, the hub and its heart-beat thread.
#[derive(Debug)]
pub struct StompServer {
    running: sockeye::server::RunningServer,
    hub: Arc<Hub>,
    beats: Option<std::thread::JoinHandle<()>>,
    ws_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl StompServer {
    /// Binds `ws` (HTTP and STOMP over WebSocket) and, if given, `tcp` (STOMP over TCP), and
    /// starts serving. The server's sub-protocol list is set to [`SUB_PROTOCOLS`].
    pub fn start(
        ws: SocketAddr,
        tcp: Option<SocketAddr>,
        mut config: sockeye::server::ServerConfig,
        stomp: StompConfig,
        app: Box<dyn Application>,
    ) -> std::io::Result<StompServer> {
        config.handshake.protocols = SUB_PROTOCOLS.iter().map(|p| p.to_string()).collect();
        if let Some(prefix) = &stomp.sockjs_path {
            config.sockjs.push(sockeye::sockjs::Service::new(prefix));
        }
        let hub = Hub::new(stomp, app)?;
        let mut server = sockeye::server::Server::bind(ws, config)?;
        hub.set_engine(server.shutdown_handle());
        let ws_addr = server.local_addr();
        let tcp_addr = match tcp {
            Some(addr) => Some(server.bind_stream(addr)?),
            None => None,
        };
        let beats = heartbeat::spawn(&hub)?;
        let handler_hub = hub.clone();
        let running = server.spawn(move || StompHandler::new(handler_hub.clone()))?;
        Ok(StompServer {
            running,
            hub,
            beats: Some(beats),
            ws_addr,
            tcp_addr,
        })
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn shutdown_handle(&self) -> sockeye::server::ShutdownHandle {
        self.running.shutdown_handle()
    }

    /// The engine's counters (connections, drops, pauses).
    pub fn engine_stats(&self) -> sockeye::server::ServerStats {
        self.running.stats()
    }

    /// Waits until the engine stops (a shutdown through the handle, or a signal).
    pub fn join(mut self) -> std::io::Result<()> {
        let result = self.running.join();
        self.hub.stop();
        if let Some(beats) = self.beats.take() {
            let _ = beats.join();
        }
        result
    }

    /// Graceful shutdown, then waits.
    pub fn shutdown(self) -> std::io::Result<()> {
        self.running.shutdown_handle().shutdown();
        self.join()
    }
}

/// Per-connection data that carries a [`Link`].
pub trait AsLink {
    fn link(&mut self) -> &mut Link;
}

impl AsLink for Link {
    fn link(&mut self) -> &mut Link {
        self
    }
}

/// How a session reached the server (the label of its metrics).
enum Transport {
    Ws,
    Sockjs,
    Tcp,
}

fn transport<D>(session: &Session<'_, D>) -> Transport {
    if session.is_stream() {
        Transport::Tcp
    } else if session.is_sockjs() {
        Transport::Sockjs
    } else {
        Transport::Ws
    }
}

/// The engine handler of a STOMP server: one per worker.
#[derive(Clone, Debug)]
pub struct StompHandler {
    hub: Arc<Hub>,
}

impl StompHandler {
    pub fn new(hub: Arc<Hub>) -> Self {
        StompHandler { hub }
    }
}

impl Handler for StompHandler {
    type Data = Link;

    fn on_upgrade(
        &mut self,
        req: &Request<'_, '_>,
        upgrading: &mut Upgrading,
    ) -> Result<Link, Rejection> {
        if let Err(refused) = self
            .hub
            .origins
            .check(req.header_str("origin"), req.header_str("host"))
        {
            let peer = upgrading.peer.map(|p| p.to_string()).unwrap_or_default();
            metrics::bump(Counter::RefusedOrigin);
            warn!(%peer, origin = %refused.origin, host = %refused.host, path = req.path(), "session refused: origin not allowed (same-origin only unless --allowed-origins lists it)");
            return Err(Rejection::new(403, refused.to_string()));
        }
        let from = upgrading.peer.map(|p| p.ip());
        // The engine routes only the SockJS service's own URLs here.
        if upgrading.sockjs.is_some() {
            return Ok(Link::from_peer(from));
        }
        if req.path() != self.hub.ws_path {
            metrics::bump(Counter::RefusedPath);
            return Err(Rejection::new(
                404,
                format!("no WebSocket endpoint at {}", req.path()),
            ));
        }
        // The sub-protocol was chosen from the server's list; a client offering none is welcome.
        Ok(Link::from_peer(from))
    }

    fn on_http(&mut self, req: &Request<'_, '_>, body: &[u8]) -> HttpResponse {
        self.on_http_from(None, req, body)
    }

    fn on_http_from(
        &mut self,
        peer: Option<SocketAddr>,
        req: &Request<'_, '_>,
        body: &[u8],
    ) -> HttpResponse {
        if req.path() == self.hub.ws_path {
            return HttpResponse::text(426, "this endpoint speaks STOMP over WebSocket\n");
        }
        if let Some(response) = ops::answer(&self.hub, req) {
            return response;
        }
        let peer = peer.map(|p| p.ip());
        self.hub
            .app
            .on_http_from(peer, req, body, &self.hub.messaging())
    }

    fn on_stream_open(&mut self, peer: SocketAddr) -> Option<Link> {
        debug!(%peer, "STOMP over TCP connection");
        Some(Link::from_peer(Some(peer.ip())))
    }

    fn on_open(&mut self, session: &mut Session<'_, Link>) {
        if let Some(ip) = session.data().peer() {
            self.hub.broker().opened(session.id(), ip);
        }
        self.hub.register(session.id(), session.handle());
        self.hub
            .shards
            .get_or_init(|| super::shard::Shards::new(session.workers()));
        metrics::bump(match transport(session) {
            Transport::Ws => Counter::AcceptedWs,
            Transport::Sockjs => Counter::AcceptedSockjs,
            Transport::Tcp => Counter::AcceptedTcp,
        });
    }

    fn on_message(&mut self, session: &mut Session<'_, Link>, message: Message<'_>) {
        let bytes = match message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        };
        let (messages, in_bytes) = match transport(session) {
            Transport::Sockjs => (Counter::MessagesInSockjs, Counter::BytesInSockjs),
            _ => (Counter::MessagesInWs, Counter::BytesInWs),
        };
        metrics::bump(messages);
        metrics::add(in_bytes, bytes.len() as u64);
        // A WebSocket message is handled whole: the engine pauses between messages.
        self.hub.feed(session, bytes, Batch::ALL);
    }

    fn on_stream_data(&mut self, session: &mut Session<'_, Link>, bytes: &[u8]) -> usize {
        let used = self.hub.feed(session, bytes, STREAM_BATCH);
        metrics::bump(Counter::MessagesInTcp);
        metrics::add(Counter::BytesInTcp, used as u64);
        used
    }

    fn on_task(&mut self, task: Task, out: &mut TaskOut<'_>) {
        match task.downcast::<super::shard::ShardTask>() {
            Ok(task) => self.hub.run_task(*task, out),
            Err(_) => debug!("a task the STOMP handler does not know: dropped"),
        }
    }

    fn on_drain(&mut self, session: &mut Session<'_, Link>) {
        self.hub.drained(session);
    }

    fn on_backpressure(&mut self, session: &mut Session<'_, Link>) {
        self.hub.congested(session);
    }

    fn on_overflow(&mut self, session: &mut Session<'_, Link>, dropped: u32) {
        self.hub.overflowed(session, dropped);
    }

    fn on_close(&mut self, session: &mut Session<'_, Link>, code: u16, reason: &str) {
        let (connected, user) = {
            let broker = self.hub.broker();
            let id = session.id();
            (
                broker.version(id).is_some(),
                broker.user(id).map(str::to_owned),
            )
        };
        if connected {
            // Connected sessions only: a refused or unfinished one was logged as such.
            let peer = session.data().peer();
            info!(
                session = session.id(),
                user = user.as_deref().unwrap_or(""),
                peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                code,
                reason,
                "STOMP session closed"
            );
        } else {
            debug!(session = session.id(), code, reason, "STOMP session closed");
        }
        metrics::bump(match transport(session) {
            Transport::Ws => Counter::ClosedWs,
            Transport::Sockjs => Counter::ClosedSockjs,
            Transport::Tcp => Counter::ClosedTcp,
        });
        self.hub.closed(session.id(), session.data_mut());
    }
}
