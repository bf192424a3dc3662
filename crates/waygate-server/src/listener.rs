//! Accept loops: one task per TCP connection, HTTP/1.1 with upgrades, header read timeout,
//! and keep-alive turned off once draining starts.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::state::AppState;

/// Slowloris guard: a client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn accept_loop(listener: TcpListener, router: Router, state: AppState) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = state.lifecycle.stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let s = state.clone();
        state.lifecycle.connections.spawn(serve(tcp, peer, router, s));
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, router: Router, state: AppState) {
    let draining = state.lifecycle.is_draining();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(!draining);
    let conn = builder.serve_connection(TokioIo::new(tcp), svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        _ = state.lifecycle.drain_started.cancelled(), if !draining => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
