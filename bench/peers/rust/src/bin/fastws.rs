//! The Rust floor: hyper 1 + fastwebsockets, one current-thread runtime, one task per connection.
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn session(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let w = waygate_peers::welcome();
    ws.write_frame(Frame::text(Payload::Borrowed(w.as_bytes()))).await?;
    let mut out = Vec::with_capacity(128);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text => {
                waygate_peers::reply(&frame.payload, &mut out);
                ws.write_frame(Frame::text(Payload::Borrowed(&out))).await?;
            }
            _ => {}
        }
    }
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (res, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = session(fut).await;
    });
    Ok(res)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let port = waygate_peers::port(9004);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        println!("fastwebsockets peer on 127.0.0.1:{port}");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let conn =
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handle)).with_upgrades();
                let _ = conn.await;
            });
        }
    });
}
