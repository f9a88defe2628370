//! A SockJS echo server for the SockJS benchmark (`benches/scripts/sockjs.sh`): one service at
//! `/echo` with the default settings (streaming limit 128 KiB, heart-beats every 25 s,
//! disconnect delay 5 s), every message sent back unchanged, as sockjs-node's echo peer does.
//!
//! ```text
//! sockjs_echo [127.0.0.1:8081] [--workers 1]
//! ```
//!
//! One worker by default, to compare with sockjs-node's single thread. SIGINT / SIGTERM shut
//! it down gracefully.

use std::net::SocketAddr;
use std::process::ExitCode;

use sockeye::handshake::Request;
use sockeye::server::{
    shutdown_on_signals, Handler, Message, Rejection, Server, ServerConfig, Session, Upgrading,
};
use sockeye::sockjs::Service;

const USAGE: &str = "usage: sockjs_echo [ADDR (127.0.0.1:8081)] [--workers N (1)]";

struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = session.send(message);
    }
}

fn parse(args: &[String]) -> Result<(SocketAddr, usize), String> {
    let mut addr = "127.0.0.1:8081".to_string();
    let mut workers = 1usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--workers" => {
                let v = it.next().ok_or("--workers needs a value")?;
                workers = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=256).contains(&n))
                    .ok_or_else(|| format!("bad --workers {v:?}"))?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            a if !a.starts_with("--") => addr = a.to_string(),
            a => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok((addr, workers))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, workers) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sockjs_echo: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ServerConfig {
        workers,
        sockjs: vec![Service::new("/echo")],
        ..ServerConfig::default()
    };
    let run = || -> std::io::Result<()> {
        let server = Server::bind(addr, config)?;
        shutdown_on_signals(server.shutdown_handle())?;
        println!(
            "sockjs_echo: {workers} worker(s), listening on http://{}/echo",
            server.local_addr()
        );
        server.run(|| Echo)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockjs_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
