//! Wire types shared by every waygate component: error codes and the error envelope,
//! the device gateway API and WebSocket messages, realtime frames and close codes.
//!
//! This crate does no I/O so that clients, tools and the server agree on one definition.

pub mod close;
pub mod device;
pub mod error;
pub mod realtime;
pub mod terminal;

pub use error::{ErrorBody, ErrorCode, ErrorDetails, ErrorEnvelope};

/// Version of the device and realtime WebSocket protocols spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;
