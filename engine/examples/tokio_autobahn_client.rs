//! Autobahn client-suite driver through the tokio adapter: runs every case of a
//! `wstest -m fuzzingserver`, echoing what it is sent, then asks for the reports.
//!
//! `cargo run --release -p sockeye --features tokio --example tokio_autobahn_client -- ws://127.0.0.1:9001`
//!
//! Offers permessage-deflate as the blocking autobahn_client does (cases 12.* and 13.*).

use sockeye::deflate::DeflateConfig;
use sockeye::tokio::{Config, Error, WebSocketStream};
use tokio::net::TcpStream;

const AGENT: &str = "sockeye";

fn config() -> Config {
    let mut config = Config::default();
    config.limits.max_fragments = 1 << 20;
    // Each message we send compressed alone (the hint the suite looks for), the server free to
    // keep its context, so that our inflater with context takeover is exercised.
    config.deflate = Some(DeflateConfig {
        server_no_context_takeover: false,
        ..DeflateConfig::default()
    });
    config
}

async fn open(host: &str, target: &str) -> Result<WebSocketStream<TcpStream>, Error> {
    WebSocketStream::connect_tcp(host.to_owned(), target, config()).await
}

/// Echoes until the case ends: `None` from `next` (close handshake done, or the stream ended).
async fn run_case(host: &str, case: u32) -> Result<(), Error> {
    let mut ws = open(host, &format!("/runCase?case={case}&agent={AGENT}")).await?;
    while let Some(item) = ws.next().await {
        match item {
            Ok(message) if message.is_data() => match ws.send(message).await {
                Ok(()) | Err(Error::Send(_)) => {}
                Err(e) => return Err(e),
            },
            // After a violation our close is sent; the dropped stream ends the case.
            Ok(_) | Err(Error::Protocol(_) | Error::Dropped) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn case_count(host: &str) -> Result<u32, String> {
    let mut ws = open(host, "/getCaseCount")
        .await
        .map_err(|e| e.to_string())?;
    while let Some(item) = ws.next().await {
        if let Some(text) = item.map_err(|e| e.to_string())?.as_text() {
            return text
                .trim()
                .parse()
                .map_err(|_| format!("bad case count {text:?}"));
        }
    }
    Err("no case count".into())
}

/// Runs a request whose only job is to complete (updateReports).
async fn finish(host: &str) -> Result<(), Error> {
    let mut ws = open(host, &format!("/updateReports?agent={AGENT}")).await?;
    while let Some(item) = ws.next().await {
        match item {
            Ok(_) | Err(Error::Dropped) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn run(host: &str) -> Result<(), String> {
    let count = case_count(host)
        .await
        .map_err(|e| format!("cannot get the case count from {host}: {e}"))?;
    eprintln!("tokio_autobahn_client: running {count} cases against {host}");
    let mut errors = 0;
    for case in 1..=count {
        if let Err(e) = run_case(host, case).await {
            // The fuzzing server judges the case; a client-side error is only informative.
            eprintln!("tokio_autobahn_client: case {case}: {e}");
            errors += 1;
        }
    }
    finish(host)
        .await
        .map_err(|e| format!("updateReports failed: {e}"))?;
    eprintln!("tokio_autobahn_client: done ({errors} cases ended with a client-side error)");
    Ok(())
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let host = base.trim_start_matches("ws://").trim_end_matches('/');
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
    if let Err(e) = runtime.block_on(run(host)) {
        eprintln!("tokio_autobahn_client: {e}");
        std::process::exit(1);
    }
}
