//! Sockeye: a WebSocket engine.
