//! The Discord gateway wire format (API v10, `encoding=json`): opcodes, close codes, the payload
//! envelope and the `zlib-stream` transport compression. Shared by the client (`ingest`) and the
//! simulator (`sim`), so both speak exactly the same protocol.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

pub const API_VERSION: u8 = 10;

/// Gateway opcodes.
pub mod op {
    pub const DISPATCH: u8 = 0;
    pub const HEARTBEAT: u8 = 1;
    pub const IDENTIFY: u8 = 2;
    pub const PRESENCE_UPDATE: u8 = 3;
    pub const VOICE_STATE_UPDATE: u8 = 4;
    pub const RESUME: u8 = 6;
    pub const RECONNECT: u8 = 7;
    pub const REQUEST_GUILD_MEMBERS: u8 = 8;
    pub const INVALID_SESSION: u8 = 9;
    pub const HELLO: u8 = 10;
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// Gateway close codes.
pub mod close {
    pub const UNKNOWN_ERROR: u16 = 4000;
    pub const UNKNOWN_OPCODE: u16 = 4001;
    pub const DECODE_ERROR: u16 = 4002;
    pub const NOT_AUTHENTICATED: u16 = 4003;
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    pub const INVALID_SEQ: u16 = 4007;
    pub const RATE_LIMITED: u16 = 4008;
    pub const SESSION_TIMED_OUT: u16 = 4009;
    pub const INVALID_SHARD: u16 = 4010;
    pub const SHARDING_REQUIRED: u16 = 4011;
    pub const INVALID_API_VERSION: u16 = 4012;
    pub const INVALID_INTENTS: u16 = 4013;
    pub const DISALLOWED_INTENTS: u16 = 4014;
    /// Closing with 1000 or 1001 ends the session; any other code keeps it resumable. The client
    /// uses this one when it wants to resume (zombie connection, op 7, restart).
    pub const CLIENT_RESUME: u16 = 4900;
}

/// What a client should do after the gateway closed the connection with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    Resume,
    Reidentify,
    Fatal(&'static str),
}

pub fn close_action(code: u16) -> CloseAction {
    match code {
        close::AUTHENTICATION_FAILED => CloseAction::Fatal("authentication failed: check DISCORD_TOKEN"),
        close::INVALID_SHARD => CloseAction::Fatal("invalid shard"),
        close::SHARDING_REQUIRED => CloseAction::Fatal("sharding required: raise --shards"),
        close::INVALID_API_VERSION => CloseAction::Fatal("invalid API version"),
        close::INVALID_INTENTS => CloseAction::Fatal("invalid intents"),
        close::DISALLOWED_INTENTS => CloseAction::Fatal("disallowed intents: enable them for the application"),
        close::INVALID_SEQ | close::SESSION_TIMED_OUT => CloseAction::Reidentify,
        // 1000/1001 from the server also end the session.
        1000 | 1001 => CloseAction::Reidentify,
        _ => CloseAction::Resume,
    }
}

/// `{"op","d","s","t"}` with the data left unparsed.
#[derive(Debug, Deserialize)]
pub struct Payload<'a> {
    pub op: u8,
    #[serde(borrow, default)]
    pub d: Option<&'a RawValue>,
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(borrow, default)]
    pub t: Option<Cow<'a, str>>,
}

impl<'a> Payload<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Payload<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn data<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.d.map(RawValue::get).unwrap_or("null"))
    }
}

/// `d` of op 10 Hello.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub heartbeat_interval: u64,
}

/// The fields of `READY` a client needs to resume.
#[derive(Debug, Deserialize)]
pub struct Ready {
    pub session_id: String,
    pub resume_gateway_url: String,
}

/// `GET /api/v10/gateway/bot`.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct GatewayBot {
    pub url: String,
    pub shards: u32,
    pub session_start_limit: SessionStartLimit,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct SessionStartLimit {
    pub total: u32,
    pub remaining: u32,
    pub reset_after: u64,
    pub max_concurrency: u32,
}

/// Shard that receives a guild's events: `(guild_id >> 22) % num_shards`.
pub fn shard_for_guild(guild_id: u64, num_shards: u32) -> u32 {
    ((guild_id >> 22) % u64::from(num_shards.max(1))) as u32
}

/// The gateway URL with the query every connection carries.
pub fn connect_url(base: &str, compress: bool) -> String {
    let base = base.trim_end_matches('/');
    let compress = if compress { "&compress=zlib-stream" } else { "" };
    format!("{base}/?v={API_VERSION}&encoding=json{compress}")
}

/// Marks the end of a message in a `zlib-stream` connection (the tail of a sync flush).
pub const ZLIB_SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Client side of `compress=zlib-stream`: one zlib context for the whole connection; a message
/// may span several binary frames and is complete when the buffer ends with [`ZLIB_SUFFIX`].
pub struct Inflater {
    z: flate2::Decompress,
    pending: Vec<u8>,
    /// Hard cap on one inflated message, so a hostile stream cannot exhaust memory.
    max_message: usize,
}

impl Inflater {
    pub fn new(max_message: usize) -> Inflater {
        Inflater { z: flate2::Decompress::new(true), pending: Vec::new(), max_message }
    }

    /// Feeds one binary frame; returns the inflated message once it is complete.
    pub fn push(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.pending.extend_from_slice(frame);
        if self.pending.len() > self.max_message {
            return Err(format!("compressed message over {} bytes", self.max_message));
        }
        if !self.pending.ends_with(&ZLIB_SUFFIX) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.pending.len() * 4);
        let mut input = &self.pending[..];
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.len().max(4096));
            }
            let (before_in, before_out) = (self.z.total_in(), out.len());
            self.z.decompress_vec(input, &mut out, flate2::FlushDecompress::Sync).map_err(|e| e.to_string())?;
            let consumed = (self.z.total_in() - before_in) as usize;
            input = &input[consumed..];
            if consumed == 0 && out.len() == before_out && !input.is_empty() {
                return Err("zlib stream makes no progress".to_owned());
            }
            if out.len() > self.max_message {
                return Err(format!("inflated message over {} bytes", self.max_message));
            }
            // Done when all input is consumed and the output buffer was not filled to the brim.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        self.pending.clear();
        Ok(Some(out))
    }
}

/// Server side of `compress=zlib-stream` (the simulator).
pub struct Deflater {
    z: flate2::Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater { z: flate2::Compress::new(flate2::Compression::fast(), true) }
    }
}

impl Deflater {
    /// Compresses one message and ends it with a sync flush.
    pub fn compress(&mut self, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let mut input = message;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            self.z.compress_vec(input, &mut out, flate2::FlushCompress::Sync).expect("deflate into a Vec cannot fail");
            input = &input[(self.z.total_in() - before) as usize..];
            if input.is_empty() && out.ends_with(&ZLIB_SUFFIX) && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_stream_round_trips_across_messages_and_split_frames() {
        let mut d = Deflater::default();
        let mut i = Inflater::new(1 << 20);
        let big = format!(r#"{{"op":0,"t":"MESSAGE_CREATE","s":2,"d":{{"content":"{}"}}}}"#, "x".repeat(100_000));
        for msg in [r#"{"op":10,"d":{"heartbeat_interval":41250}}"#, big.as_str(), r#"{"op":11}"#] {
            let z = d.compress(msg.as_bytes());
            assert!(z.ends_with(&ZLIB_SUFFIX));
            // Split in two frames: the first half alone is not a message yet.
            let (a, b) = z.split_at(z.len() / 2);
            if !a.ends_with(&ZLIB_SUFFIX) {
                assert_eq!(i.push(a).unwrap(), None);
                assert_eq!(i.push(b).unwrap().unwrap(), msg.as_bytes());
            } else {
                assert_eq!(i.push(&z).unwrap().unwrap(), msg.as_bytes());
            }
        }
    }

    #[test]
    fn inflater_refuses_oversized_messages() {
        let mut d = Deflater::default();
        let mut i = Inflater::new(1000);
        let z = d.compress(&vec![b'a'; 10_000]);
        assert!(i.push(&z).unwrap_err().contains("over 1000"));
    }

    #[test]
    fn payload_parses_dispatch_and_close_codes_classify() {
        let p = Payload::parse(br#"{"op":0,"s":7,"t":"READY","d":{"session_id":"abc","resume_gateway_url":"ws://x"}}"#)
            .unwrap();
        assert_eq!((p.op, p.s, p.t.as_deref()), (0, Some(7), Some("READY")));
        let r: Ready = p.data().unwrap();
        assert_eq!(r.session_id, "abc");
        assert_eq!(close_action(4004), CloseAction::Fatal("authentication failed: check DISCORD_TOKEN"));
        assert_eq!(close_action(4009), CloseAction::Reidentify);
        assert_eq!(close_action(4000), CloseAction::Resume);
        assert_eq!(close_action(1006), CloseAction::Resume);
        assert_eq!(shard_for_guild(41771983423143937, 2), ((41771983423143937u64 >> 22) % 2) as u32);
        assert_eq!(connect_url("ws://127.0.0.1:1/", true), "ws://127.0.0.1:1/?v=10&encoding=json&compress=zlib-stream");
    }
}
