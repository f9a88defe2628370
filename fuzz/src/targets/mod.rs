//! The bodies of the fuzz targets, one module each; `fuzz_targets/NAME.rs` calls `NAME::run`.

pub mod broker;
pub mod connection;
pub mod frame_header;
pub mod handshake;
pub mod inflate;
pub mod mask;
pub mod roundtrip;
pub mod stomp;
pub mod utf8_incremental;

/// Runs the body of the target called `name` (for replaying files without libFuzzer).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "broker" => broker::run(data),
        "frame_header" => frame_header::run(data),
        "connection_server" => connection::run(sockeye::Role::Server, data),
        "connection_client" => connection::run(sockeye::Role::Client, data),
        "handshake" => handshake::run(data),
        "inflate" => inflate::run(data),
        "utf8_incremental" => utf8_incremental::run(data),
        "mask" => mask::run(data),
        "roundtrip" => roundtrip::run(data),
        "stomp" => stomp::run(data),
        other => panic!("no fuzz target called {other}"),
    }
}

/// Every target name, as `cargo fuzz list` prints them.
pub const NAMES: &[&str] = &[
    "broker",
    "connection_client",
    "connection_server",
    "frame_header",
    "handshake",
    "inflate",
    "mask",
    "roundtrip",
    "stomp",
    "utf8_incremental",
];
