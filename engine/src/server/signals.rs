//! Graceful shutdown on SIGINT / SIGTERM, for server binaries.
//!
//! Built on `signal-hook`: its handler only writes to a self-pipe (the async-signal-safe part,
//! done without `unsafe` on our side), and a thread of ours reads the pipe and calls
//! [`ShutdownHandle::shutdown`], which may lock and wake freely.

use std::io;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{info, warn};

use super::ShutdownHandle;

/// Starts a thread that shuts the server down gracefully on the first SIGINT or SIGTERM
/// (stop accepting, close every session with 1001, wait up to the shutdown timeout), and exits
/// the process at once, with status 128 + the signal, on a second one.
pub fn shutdown_on_signals(handle: ShutdownHandle) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("sockeye-signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if let Some(signal) = received.next() {
                info!(signal, "signal received: shutting down");
                handle.shutdown();
            }
            if let Some(signal) = received.next() {
                warn!(signal, "second signal: exiting now");
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}
