//! Autobahn client-suite driver: runs every case of a `wstest -m fuzzingserver` and echoes
//! what it is sent, then asks the fuzzing server to write its reports.
//!
//! `cargo run --release -p sockeye --example autobahn_client -- ws://127.0.0.1:9001`
//!
//! With feature `tls`, a `wss://` URL is trusted through the CA in the PEM file that
//! `SOCKEYE_TLS_CA` names (the platform's roots without it).

use std::time::Duration;

use sockeye::client::{Client, ClientConfig, ClientError, OwnedEvent};
use sockeye::deflate::DeflateConfig;

const AGENT: &str = "sockeye";

fn config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.limits.max_frame_size = 16 << 20;
    config.limits.max_message_size = 16 << 20;
    config.limits.max_fragments = 1 << 20;
    // Offer permessage-deflate (cases 12.* and 13.*): each message we send compressed alone
    // (the hint the suite's servers look for), and the server free to keep its context, so
    // that our inflater with context takeover is what these cases exercise.
    config.deflate = Some(DeflateConfig {
        server_no_context_takeover: false,
        ..DeflateConfig::default()
    });
    #[cfg(feature = "tls")]
    if let Some(ca) = std::env::var_os("SOCKEYE_TLS_CA") {
        match sockeye::tls::ClientTls::with_roots_file(ca.as_ref()) {
            Ok(roots) => config.tls = Some(roots),
            Err(e) => eprintln!("SOCKEYE_TLS_CA: {e} (using the platform's roots)"),
        }
    }
    config
}

/// Echoes until the case ends (close handshake done and TCP dropped, or an error).
fn run_case(base: &str, case: u32) -> Result<(), ClientError> {
    let mut client = Client::connect_with(
        &format!("{base}/runCase?case={case}&agent={AGENT}"),
        &config(),
    )?;
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(ClientError::Io)?;
    loop {
        let result = match client.read() {
            Ok(OwnedEvent::Text(text)) => client.send_text(&text),
            Ok(OwnedEvent::Binary(bytes)) => client.send_binary(&bytes),
            Ok(_) => Ok(()),
            // After a violation our close is sent: keep reading until the server hangs up.
            Err(ClientError::Protocol(_)) => Ok(()),
            Err(ClientError::Dropped) => return Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) | Err(ClientError::Send(_)) => {}
            Err(e) => return Err(e),
        }
    }
}

fn case_count(base: &str) -> Result<u32, ClientError> {
    let mut client = Client::connect_with(&format!("{base}/getCaseCount"), &config())?;
    loop {
        match client.read()? {
            OwnedEvent::Text(text) => {
                return text.trim().parse().map_err(|_| {
                    ClientError::Io(std::io::Error::other(format!("bad case count {text:?}")))
                });
            }
            OwnedEvent::Close(_) => return Err(ClientError::Dropped),
            _ => {}
        }
    }
}

/// Runs a request whose only job is to complete (updateReports).
fn finish(url: &str) -> Result<(), ClientError> {
    let mut client = Client::connect_with(url, &config())?;
    loop {
        match client.read() {
            Ok(_) => {}
            Err(ClientError::Dropped) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let base = base.trim_end_matches('/');
    let count = match case_count(base) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("autobahn_client: cannot get the case count from {base}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("autobahn_client: running {count} cases against {base}");
    let mut errors = 0;
    for case in 1..=count {
        if let Err(e) = run_case(base, case) {
            // The fuzzing server judges the case; a client-side error is only informative.
            eprintln!("autobahn_client: case {case}: {e}");
            errors += 1;
        }
    }
    if let Err(e) = finish(&format!("{base}/updateReports?agent={AGENT}")) {
        eprintln!("autobahn_client: updateReports failed: {e}");
        std::process::exit(1);
    }
    eprintln!("autobahn_client: done ({errors} cases ended with a client-side error)");
}
