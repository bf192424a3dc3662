//! Who the client is: its IP and whether it reached us over TLS, believing
//! `X-Forwarded-For` / `X-Forwarded-Proto` only from `WAYGATE_TRUSTED_PROXIES`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use crate::state::AppState;

#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub https: bool,
}

impl ClientInfo {
    pub fn of<B>(state: &AppState, req: &axum::http::Request<B>) -> ClientInfo {
        Self::from_parts(state, req.extensions(), req.headers())
    }

    pub fn from_parts(state: &AppState, ext: &Extensions, headers: &HeaderMap) -> ClientInfo {
        let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let proxies = &state.config.trusted_proxies;
        resolve(peer, headers, |ip| proxies.iter().any(|net| net.contains(&ip)))
    }
}

fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: impl Fn(IpAddr) -> bool) -> ClientInfo {
    if !trusted(peer) {
        return ClientInfo { ip: peer, https: false };
    }
    // The client is the rightmost address not added by one of our own proxies.
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ip = forwarded.iter().rev().copied().find(|ip| !trusted(*ip)).or(forwarded.first().copied()).unwrap_or(peer);
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    ClientInfo { ip, https }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let lb: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7"), ("x-forwarded-proto", "https")]);
        let c = resolve(lb, &h, trusted);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert!(c.https);
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        let c = resolve(stranger, &h, trusted);
        assert_eq!(c.ip, stranger, "spoofed header from an untrusted peer is ignored");
        assert!(!c.https);
    }
}
