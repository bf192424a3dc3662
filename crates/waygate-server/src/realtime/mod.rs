//! Realtime channels (SPEC 4.3): subscribe/publish with offsets and recovery, presence, JWT
//! connect auth and the server push API.

pub mod actions;
pub mod auth;
pub mod channels;
pub mod push;
pub mod routes;

pub use channels::Realtime;
