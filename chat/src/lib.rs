//! STOMP broker and chat rooms on the Sockeye engine.

pub mod app;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod http;
pub mod link;
pub mod relay;
pub mod rooms;
pub mod server;
pub mod stomp;
