//! STOMP broker and chat rooms on the Sockeye engine.

pub mod broker;
pub mod stomp;
pub mod link;
