//! The server: a hand-rolled mio event loop per worker thread.
//!
//! Each worker owns a listener bound to the same address with `SO_REUSEPORT` (the kernel
//! spreads connections across them), a slab of connections, one read buffer, one cork buffer
//! and its timers. Connections never move between workers. See [`worker`] for the loop itself
//! and [`handler`] for the application's API.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Limits;
use crate::handshake::HandshakeConfig;

pub mod handler;
pub mod out;
pub mod timers;
mod worker;

pub use handler::{Handler, HttpResponse, Message, Rejection, Session, SessionError, Upgrading};

/// Server settings, each default with its reason.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub limits: Limits,
    pub handshake: HandshakeConfig,
    /// Time allowed from accept to a complete request head (and body). Default 10 s: enough
    /// for a slow mobile client, short enough that a slowloris holds a slot only briefly.
    pub handshake_timeout: Duration,
    /// Time allowed for the peer to answer our close frame, or to finish reading an HTTP
    /// response, before TCP is dropped. Default 5 s.
    pub close_timeout: Duration,
    /// Size of each worker's shared read buffer. Default 256 KiB: large messages arrive in few
    /// reads, and it is one buffer per thread, not per connection.
    pub read_buffer_size: usize,
    /// Worker threads (event loops). Default: the number of available cores.
    pub workers: usize,
    /// Connections per worker beyond which new ones are answered 503. Default 100,000.
    pub max_connections: usize,
    /// Largest body of a plain HTTP request. Default 64 KiB.
    pub max_http_body: usize,
    /// How long a graceful shutdown waits for close handshakes. Default 5 s.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            handshake: HandshakeConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            read_buffer_size: 256 << 10,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 100_000,
            max_http_body: 64 << 10,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// State shared by a server's workers and its handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stopping: AtomicBool,
    pub wakers: Mutex<Vec<Arc<mio::Waker>>>,
}

/// Stops a running server from any thread: stop accepting, close every session with 1001,
/// wait for the close handshakes up to the shutdown timeout.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for waker in self
            .shared
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = waker.wake();
        }
    }
}

/// A bound server, not yet running.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<StdListener>,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
}

fn listener(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

impl Server {
    /// Binds one listener per worker to `addr` (port 0 picks one port for all of them).
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        let first = listener(addr)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.workers.max(1) {
            listeners.push(listener(local_addr)?);
        }
        Ok(Server {
            listeners,
            local_addr,
            config: Arc::new(config),
            shared: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// Starts the workers in background threads; `factory` makes each worker's handler.
    pub fn spawn<H, F>(self, factory: F) -> io::Result<RunningServer>
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let mut threads = Vec::new();
        for (index, std_listener) in self.listeners.into_iter().enumerate() {
            let worker = worker::Worker::new(
                index,
                std_listener,
                self.config.clone(),
                self.shared.clone(),
            )?;
            let factory = factory.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sockeye-{index}"))
                .spawn(move || worker.run(factory()))?;
            threads.push(thread);
        }
        Ok(RunningServer {
            threads,
            handle: ShutdownHandle {
                shared: self.shared,
            },
            local_addr: self.local_addr,
        })
    }

    /// Runs the workers until a shutdown completes.
    pub fn run<H, F>(self, factory: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        self.spawn(factory)?.join()
    }
}

/// A server whose workers are running.
#[derive(Debug)]
pub struct RunningServer {
    threads: Vec<JoinHandle<io::Result<()>>>,
    handle: ShutdownHandle,
    local_addr: SocketAddr,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Waits for every worker to stop.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("worker thread panicked")),
            }
        }
        result
    }

    /// Graceful shutdown, then waits for the workers.
    pub fn shutdown(self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }
}
