//! tokio-tungstenite with small buffers (4 KiB read, no write batching), one current-thread
//! runtime, one task per connection: the other WS stack of the comparison.
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let port = waygate_peers::port(9005);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        println!("tokio-tungstenite peer on 127.0.0.1:{port}");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
                let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
                    return;
                };
                if ws.send(Message::text(waygate_peers::welcome())).await.is_err() {
                    return;
                }
                let mut out = Vec::with_capacity(128);
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        waygate_peers::reply(t.as_bytes(), &mut out);
                        let text = String::from_utf8(out.clone()).unwrap_or_default();
                        if ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}
