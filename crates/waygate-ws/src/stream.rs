use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::frame::{HeaderError, OpCode, close_frame, encode_header, parse_header, unmask};

/// Bytes requested from the allocator when a read finds the buffer (nearly) full.
const READ_CHUNK: usize = 4096;
/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseFrame>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

#[derive(Debug)]
pub enum WsError {
    Io(io::Error),
    /// The peer broke the protocol; close with 1002.
    Protocol(&'static str),
    /// A text message was not UTF-8; close with 1007.
    InvalidUtf8,
    /// A message exceeded the size limit; close with 1009.
    TooBig,
    /// The peer closed the TCP connection without a close frame.
    Eof,
}

impl WsError {
    /// The close code to send for this error, if the connection can still take one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            WsError::Protocol(_) => Some(1002),
            WsError::InvalidUtf8 => Some(1007),
            WsError::TooBig => Some(1009),
            WsError::Io(_) | WsError::Eof => None,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "i/o error: {e}"),
            WsError::Protocol(m) => write!(f, "protocol error: {m}"),
            WsError::InvalidUtf8 => f.write_str("text message is not valid UTF-8"),
            WsError::TooBig => f.write_str("message too big"),
            WsError::Eof => f.write_str("connection closed without a close frame"),
        }
    }
}

impl std::error::Error for WsError {}

impl From<io::Error> for WsError {
    fn from(e: io::Error) -> Self {
        WsError::Io(e)
    }
}

/// One server-side WebSocket connection.
///
/// Reading and writing never block inside this type: the owner awaits [`readable`] or
/// [`writable`] (both take `&self`, so they can sit side by side in one `select!`), then
/// calls [`fill`]/[`next_message`] or [`flush`].
///
/// [`readable`]: WsStream::readable
/// [`writable`]: WsStream::writable
/// [`fill`]: WsStream::fill
/// [`next_message`]: WsStream::next_message
/// [`flush`]: WsStream::flush
pub struct WsStream {
    io: TcpStream,
    rbuf: BytesMut,
    /// A fragmented data message being reassembled.
    frag: Option<(OpCode, BytesMut)>,
    out: VecDeque<Bytes>,
    /// Bytes of `out[0]` already written.
    out_offset: usize,
    max_message: usize,
    close_sent: bool,
    close_received: bool,
}

impl WsStream {
    /// Wraps an upgraded socket; `leftover` holds bytes the HTTP layer read past the request.
    pub fn new(io: TcpStream, leftover: Bytes, max_message: usize) -> WsStream {
        let rbuf = if leftover.is_empty() { BytesMut::new() } else { BytesMut::from(&leftover[..]) };
        WsStream {
            io,
            rbuf,
            frag: None,
            out: VecDeque::new(),
            out_offset: 0,
            max_message,
            close_sent: false,
            close_received: false,
        }
    }

    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    /// Waits until the socket has bytes (or EOF). Cancel-safe; holds no buffer while waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// Waits until the socket can take more output. Cancel-safe.
    pub async fn writable(&self) -> io::Result<()> {
        self.io.writable().await
    }

    /// Whether bytes that could form a message are already buffered.
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Reads whatever the socket holds without waiting. `Ok(false)`: nothing was available.
    pub fn fill(&mut self) -> Result<bool, WsError> {
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.io.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(WsError::Eof),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(WsError::Io(e)),
        }
    }

    /// The next complete message from buffered bytes; `Ok(None)` when more bytes are needed.
    /// Pings are answered and close frames echoed automatically (queued; call [`flush`]).
    ///
    /// [`flush`]: WsStream::flush
    pub fn next_message(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let frag_len = self.frag.as_ref().map_or(0, |(_, b)| b.len());
            let header = match parse_header(&self.rbuf, self.max_message.saturating_sub(frag_len)) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(HeaderError::Protocol(m)) => return Err(WsError::Protocol(m)),
                Err(HeaderError::TooBig) => return Err(WsError::TooBig),
            };
            let total = header.header_len + header.len;
            if self.rbuf.len() < total {
                self.rbuf.reserve(total - self.rbuf.len());
                return Ok(None);
            }
            let mut payload = self.rbuf.split_to(total).split_off(header.header_len);
            unmask(&mut payload, header.mask);
            match header.opcode {
                OpCode::Ping => {
                    self.queue_control(OpCode::Pong, &payload);
                    return Ok(Some(Message::Ping(payload.freeze())));
                }
                OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Close => {
                    let frame = parse_close(&payload)?;
                    self.close_received = true;
                    if !self.close_sent {
                        // Echo the peer's code, as RFC 6455 5.5.1 asks.
                        let code = frame.as_ref().map_or(1000, |f| f.code);
                        self.queue_close(code, "");
                    }
                    return Ok(Some(Message::Close(frame)));
                }
                OpCode::Text | OpCode::Binary => {
                    if self.frag.is_some() {
                        return Err(WsError::Protocol("new data frame inside a fragmented message"));
                    }
                    if header.fin {
                        return finish(header.opcode, payload).map(Some);
                    }
                    self.frag = Some((header.opcode, payload));
                }
                OpCode::Continuation => {
                    let Some((_, buf)) = self.frag.as_mut() else {
                        return Err(WsError::Protocol("continuation frame without a message"));
                    };
                    buf.extend_from_slice(&payload);
                    if header.fin {
                        let (opcode, buf) = self.frag.take().expect("fragment present");
                        return finish(opcode, buf).map(Some);
                    }
                }
            }
        }
    }

    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        if !self.close_sent {
            self.out.push_back(crate::frame::frame(opcode, payload));
        }
    }

    /// Queues a pre-encoded frame (see [`crate::frame`]) after anything already queued.
    pub fn queue(&mut self, frame: Bytes) {
        if !self.close_sent {
            self.out.push_back(frame);
        }
    }

    /// Queues a close frame unless one was already sent.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.close_sent {
            self.out.push_back(close_frame(code, reason));
            self.close_sent = true;
        }
    }

    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    pub fn close_received(&self) -> bool {
        self.close_received
    }

    pub fn has_pending_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn pending_frames(&self) -> usize {
        self.out.len()
    }

    /// Sends a message now when nothing is queued ahead of it, copying only what the
    /// socket does not take. This is the request/response fast path: no allocation when the
    /// socket accepts the whole frame.
    pub fn send(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), WsError> {
        if self.close_sent {
            return Ok(());
        }
        let mut header = [0u8; 10];
        let hl = encode_header(opcode, true, payload.len(), &mut header);
        let total = hl + payload.len();
        let written = if self.out.is_empty() {
            match self.io.try_write_vectored(&[IoSlice::new(&header[..hl]), IoSlice::new(payload)]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(WsError::Io(e)),
            }
        } else {
            0
        };
        if written < total {
            let mut rest = BytesMut::with_capacity(total - written);
            if written < hl {
                rest.extend_from_slice(&header[written..hl]);
                rest.extend_from_slice(payload);
            } else {
                rest.extend_from_slice(&payload[written - hl..]);
            }
            self.out.push_back(rest.freeze());
        }
        Ok(())
    }

    /// Writes as much queued output as the socket takes now. `Ok(true)`: all written.
    pub fn flush(&mut self) -> Result<bool, WsError> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, frame) in self.out.iter().take(MAX_IOV).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &frame[self.out_offset..] } else { &frame[..] });
                n += 1;
            }
            let mut written = match self.io.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(WsError::Io(io::ErrorKind::WriteZero.into())),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(WsError::Io(e)),
            };
            while written > 0 {
                let left = self.out[0].len() - self.out_offset;
                if written >= left {
                    written -= left;
                    self.out.pop_front();
                    self.out_offset = 0;
                } else {
                    self.out_offset += written;
                    written = 0;
                }
            }
        }
        Ok(true)
    }

    /// Drops queued output that has not started going out (a frame half written is kept, so
    /// the stream stays well framed). Used before closing a slow consumer: its backlog will
    /// never be read, and the close frame should be next on the wire.
    pub fn discard_pending_output(&mut self) -> usize {
        let keep = usize::from(self.out_offset > 0);
        let dropped = self.out.len().saturating_sub(keep);
        self.out.truncate(keep);
        dropped
    }

    /// Drops buffers that an idle connection does not need, so idle memory stays small.
    pub fn release_idle_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
    }

    /// Convenience for simple owners: waits for the next message, flushing automatic replies.
    pub async fn recv(&mut self) -> Result<Message, WsError> {
        loop {
            if let Some(m) = self.next_message()? {
                self.flush()?;
                return Ok(m);
            }
            self.flush()?;
            self.readable().await?;
            self.fill()?;
        }
    }

    /// Finishes a close: writes queued output, waits for the peer's close frame if it has not
    /// come yet, then shuts the socket down. Bound it with a timeout: the peer may never answer.
    pub async fn finish_close(&mut self) {
        loop {
            match self.flush() {
                Ok(true) => break,
                Ok(false) => {
                    if self.writable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        while !self.close_received {
            match self.next_message() {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => break,
            }
            if self.readable().await.is_err() || self.fill().is_err() {
                break;
            }
        }
        let _ = self.io.shutdown().await;
    }
}

fn finish(opcode: OpCode, payload: BytesMut) -> Result<Message, WsError> {
    if opcode == OpCode::Text {
        if std::str::from_utf8(&payload).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        Ok(Message::Text(payload.freeze()))
    } else {
        Ok(Message::Binary(payload.freeze()))
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason: reason.to_owned() }))
        }
    }
}

#[cfg(test)]
mod tests;
