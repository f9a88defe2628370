//! Graceful shutdown on SIGINT / SIGTERM, and (feature `tls`) certificate reload on SIGHUP, for
//! server binaries.
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

/// Starts a thread that reloads `tls`'s default certificate from `chain` and `key` (PEM files)
/// on every SIGHUP: new handshakes get the new certificate, open sessions go on untouched. A
/// reload that fails (a file missing, a key that does not match) is logged and changes
/// nothing. Clones of `tls` (the stream listener's, say) share the certificates.
#[cfg(feature = "tls")]
pub fn reload_tls_on_sighup(
    tls: crate::tls::ServerTls,
    chain: std::path::PathBuf,
    key: std::path::PathBuf,
) -> io::Result<()> {
    let mut signals = Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("sockeye-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match tls.reload_files(&chain, &key) {
                    Ok(()) => info!(cert = %chain.display(), "SIGHUP: TLS certificate reloaded"),
                    Err(e) => warn!(
                        error = %e,
                        "SIGHUP: TLS certificate not reloaded, the old one stays"
                    ),
                }
            }
        })?;
    Ok(())
}
