//! The server side of RFC 6455 over a tokio `TcpStream`, built for many idle connections.
//!
//! Why not tokio-tungstenite or fastwebsockets: both keep a fixed read buffer per connection
//! (measured ~6 KiB per idle connection with 4 KiB buffers), and waygate's budget is 4 KiB.
//! Here an idle connection holds no buffer at all: the read buffer is allocated when bytes
//! arrive and released by [`WsStream::release_idle_buffers`]; outbound frames are `Bytes`
//! written with vectored writes straight from shared, pre-encoded frames.
//!
//! Scope: RFC 6455 without extensions (no permessage-deflate), server role only.

mod frame;
mod handshake;
mod stream;

pub use frame::{OpCode, close_frame, encode_header, frame, text_frame, unmask};
pub use handshake::{HandshakeError, accept_key, check_upgrade, requested_protocols};
pub use stream::{CloseFrame, Message, WsError, WsStream};
