use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    pub(crate) fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub(crate) fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Writes an unmasked (server) frame header into `dst`, returning its length (2, 4 or 10).
pub fn encode_header(opcode: OpCode, fin: bool, len: usize, dst: &mut [u8; 10]) -> usize {
    dst[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    if len < 126 {
        dst[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        dst[1] = 126;
        dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        dst[1] = 127;
        dst[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A complete server frame. Server frames are unmasked, so one encoded frame can be shared
/// (reference-counted) by every subscriber of a channel.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; 10];
    let n = encode_header(opcode, true, payload.len(), &mut header);
    let mut buf = BytesMut::with_capacity(n + payload.len());
    buf.put_slice(&header[..n]);
    buf.put_slice(payload);
    buf.freeze()
}

pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Text, payload)
}

/// A close frame; the reason is cut to fit the 125-byte control frame limit.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OpCode::Close, &payload)
}

/// XORs `buf` with the 4-byte client mask, eight bytes at a time.
pub fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask) as u64;
    let word = word | (word << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("chunk of 8")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub len: usize,
    pub header_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Protocol(&'static str),
    TooBig,
}

/// Parses a client frame header. `Ok(None)`: more bytes are needed. `max_data_len` bounds
/// data frames only (control frames are bounded at 125 bytes by the RFC).
pub(crate) fn parse_header(buf: &[u8], max_data_len: usize) -> Result<Option<Header>, HeaderError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(HeaderError::Protocol("reserved bits set without a negotiated extension"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(HeaderError::Protocol("unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(HeaderError::Protocol("client frames must be masked"));
    }
    let (len, mut off) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let l = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if l >> 63 != 0 {
                return Err(HeaderError::Protocol("frame length has the most significant bit set"));
            }
            (l, 10)
        }
        n => (n as u64, 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(HeaderError::Protocol("control frames must be final and at most 125 bytes"));
    }
    if !opcode.is_control() && len > max_data_len as u64 {
        return Err(HeaderError::TooBig);
    }
    if buf.len() < off + 4 {
        return Ok(None);
    }
    let mask = [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]];
    off += 4;
    Ok(Some(Header { fin, opcode, mask, len: len as usize, header_len: off }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes() {
        let mut h = [0u8; 10];
        assert_eq!(encode_header(OpCode::Text, true, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 125]);
        assert_eq!(encode_header(OpCode::Binary, true, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(encode_header(OpCode::Text, false, 70_000, &mut h), 10);
        assert_eq!(h[0], 0x01);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn unmask_matches_bytewise_xor() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut fast = orig.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = orig.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn parse_rejects_bad_headers() {
        let masked = |b0: u8, b1: u8| vec![b0, b1 | 0x80, 1, 2, 3, 4];
        assert_eq!(
            parse_header(&[0x81, 0x05], 100).unwrap_err(),
            HeaderError::Protocol("client frames must be masked")
        );
        assert!(matches!(parse_header(&masked(0xC1, 1), 100), Err(HeaderError::Protocol(_))), "rsv1");
        assert!(matches!(parse_header(&masked(0x83, 1), 100), Err(HeaderError::Protocol(_))), "opcode 3");
        assert!(matches!(parse_header(&masked(0x09, 1), 100), Err(HeaderError::Protocol(_))), "fragmented ping");
        assert!(matches!(parse_header(&masked(0x89, 126), 1000), Err(HeaderError::Protocol(_))), "long ping");
        assert_eq!(parse_header(&[0x82, 0xFE, 0x01, 0x00, 0, 0, 0, 0], 255).unwrap_err(), HeaderError::TooBig);
        assert!(parse_header(&[0x81], 10).unwrap().is_none());
        assert!(parse_header(&[0x81, 0x85, 1, 2], 10).unwrap().is_none());
        let h = parse_header(&masked(0x81, 5), 10).unwrap().unwrap();
        assert_eq!((h.len, h.header_len, h.mask), (5, 6, [1, 2, 3, 4]));
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let f = close_frame(1001, &"é".repeat(100));
        assert!(f.len() <= 2 + 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
