//! Examples of embedding Sockeye in other servers, in a crate of their own so that the
//! engine's build never pulls their dependencies: `examples/axum_echo.rs` (an axum route that
//! upgrades and hands the connection to the tokio adapter). See docs/embedding.md.
