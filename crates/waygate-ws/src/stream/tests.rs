use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn pair(max: usize) -> (WsStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (WsStream::new(server, Bytes::new(), max), client)
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xA1, 0xB2, 0xC3, 0xD4];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server frame: (opcode, payload).
async fn read_server_frame(c: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    c.read_exact(&mut h).await.unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            c.read_exact(&mut b).await.unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    c.read_exact(&mut p).await.unwrap();
    (h[0] & 0x0F, p)
}

#[tokio::test]
async fn text_round_trip_without_queueing() {
    let (mut ws, mut c) = pair(1024).await;
    c.write_all(&client_frame(true, 1, b"hello")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::Text(Bytes::from_static(b"hello")));
    ws.send(OpCode::Text, b"world").unwrap();
    assert!(!ws.has_pending_output(), "an idle socket takes a small frame at once");
    assert_eq!(read_server_frame(&mut c).await, (1, b"world".to_vec()));
}

#[tokio::test]
async fn fragments_reassemble_around_an_interleaved_ping() {
    let (mut ws, mut c) = pair(1024).await;
    let mut bytes = client_frame(false, 1, b"hel");
    bytes.extend(client_frame(true, 9, b"p"));
    bytes.extend(client_frame(false, 0, b"l"));
    bytes.extend(client_frame(true, 0, b"o"));
    c.write_all(&bytes).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::Ping(Bytes::from_static(b"p")));
    assert_eq!(ws.recv().await.unwrap(), Message::Text(Bytes::from_static(b"hello")));
    assert_eq!(read_server_frame(&mut c).await, (0xA, b"p".to_vec()), "automatic pong");
}

#[tokio::test]
async fn frames_split_into_single_bytes_still_parse() {
    let (mut ws, mut c) = pair(100_000).await;
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let frame = client_frame(true, 2, &payload);
    let writer = tokio::spawn(async move {
        for chunk in frame.chunks(997) {
            c.write_all(chunk).await.unwrap();
            c.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        c
    });
    assert_eq!(ws.recv().await.unwrap(), Message::Binary(Bytes::from(payload)));
    writer.await.unwrap();
}

#[tokio::test]
async fn size_limit_applies_to_frames_and_reassembled_messages() {
    let (mut ws, mut c) = pair(10).await;
    c.write_all(&client_frame(true, 1, b"0123456789A")).await.unwrap();
    let err = ws.recv().await.unwrap_err();
    assert_eq!(err.close_code(), Some(1009));

    let (mut ws, mut c) = pair(10).await;
    let mut bytes = client_frame(false, 2, b"012345");
    bytes.extend(client_frame(true, 0, b"67890"));
    c.write_all(&bytes).await.unwrap();
    assert!(matches!(ws.recv().await, Err(WsError::TooBig)));
}

#[tokio::test]
async fn protocol_violations_map_to_close_codes() {
    let (mut ws, mut c) = pair(100).await;
    c.write_all(&client_frame(true, 1, &[0xff, 0xfe])).await.unwrap();
    assert_eq!(ws.recv().await.unwrap_err().close_code(), Some(1007));

    let (mut ws, mut c) = pair(100).await;
    c.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(ws.recv().await.unwrap_err().close_code(), Some(1002), "unmasked");

    let (mut ws, mut c) = pair(100).await;
    c.write_all(&client_frame(true, 0, b"x")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap_err().close_code(), Some(1002), "stray continuation");

    let (mut ws, mut c) = pair(100).await;
    c.write_all(&client_frame(true, 8, &[0x03, 0xE7])).await.unwrap();
    assert_eq!(ws.recv().await.unwrap_err().close_code(), Some(1002), "close code 999");
}

#[tokio::test]
async fn close_is_echoed_and_eof_is_reported() {
    let (mut ws, mut c) = pair(100).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.write_all(&client_frame(true, 8, &payload)).await.unwrap();
    let m = ws.recv().await.unwrap();
    assert_eq!(m, Message::Close(Some(CloseFrame { code: 1000, reason: "bye".into() })));
    assert!(ws.close_received() && ws.close_sent());
    let (op, p) = read_server_frame(&mut c).await;
    assert_eq!((op, &p[..2]), (8, &1000u16.to_be_bytes()[..]));
    drop(c);
    let (mut ws, c) = pair(100).await;
    drop(c);
    assert!(matches!(ws.recv().await, Err(WsError::Eof)));
}

#[tokio::test]
async fn queued_output_survives_partial_writes_in_order() {
    let (mut ws, mut c) = pair(100).await;
    let frames: Vec<Bytes> =
        (0..4000u32).map(|i| crate::frame::frame(OpCode::Binary, &[(i % 256) as u8; 1500])).collect();
    for f in &frames {
        ws.queue(f.clone());
    }
    assert!(!ws.flush().unwrap(), "6 MB cannot fit in the socket buffers of an idle reader");
    let reader = tokio::spawn(async move {
        for i in 0..4000u32 {
            let (op, p) = read_server_frame(&mut c).await;
            assert_eq!(op, 2);
            assert!(p.iter().all(|&b| b == (i % 256) as u8), "frame {i} intact");
        }
    });
    while !ws.flush().unwrap() {
        ws.writable().await.unwrap();
    }
    reader.await.unwrap();
    ws.release_idle_buffers();
    assert_eq!(ws.out.capacity(), 0);
}

#[tokio::test]
async fn idle_connection_holds_no_buffers() {
    let (mut ws, mut c) = pair(100).await;
    assert_eq!(ws.rbuf.capacity(), 0, "nothing allocated before the first byte");
    c.write_all(&client_frame(true, 1, b"x")).await.unwrap();
    ws.recv().await.unwrap();
    assert!(ws.rbuf.capacity() > 0);
    ws.release_idle_buffers();
    assert_eq!(ws.rbuf.capacity(), 0);
}

#[tokio::test]
async fn discarding_output_keeps_a_half_written_frame_whole() {
    let (mut ws, mut c) = pair(100).await;
    for _ in 0..4000 {
        ws.queue(crate::frame::frame(OpCode::Binary, &[7u8; 1500]));
    }
    assert!(!ws.flush().unwrap());
    let dropped = ws.discard_pending_output();
    assert!(dropped > 0 && dropped < 4000);
    ws.queue_close(1013, "slow_consumer");
    let reader = tokio::spawn(async move {
        loop {
            let (op, p) = read_server_frame(&mut c).await;
            if op == 8 {
                return u16::from_be_bytes([p[0], p[1]]);
            }
            assert_eq!(p.len(), 1500, "every data frame arrives whole");
        }
    });
    while !ws.flush().unwrap() {
        ws.writable().await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), 1013);
}
