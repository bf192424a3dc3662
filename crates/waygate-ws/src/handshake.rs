use base64::Engine;
use http::{HeaderMap, Method, header};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not a WebSocket upgrade request at all (plain HTTP to a WS path).
    NotUpgrade,
    MethodNotGet,
    /// `Sec-WebSocket-Version` other than 13: answer 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    MissingKey,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HandshakeError::NotUpgrade => "this path only accepts WebSocket upgrades",
            HandshakeError::MethodNotGet => "WebSocket upgrades must use GET",
            HandshakeError::UnsupportedVersion => "only Sec-WebSocket-Version 13 is supported",
            HandshakeError::MissingKey => "missing or malformed Sec-WebSocket-Key",
        })
    }
}

impl std::error::Error for HandshakeError {}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks an HTTP/1.1 upgrade request and returns its `Sec-WebSocket-Key`.
pub fn check_upgrade<'a>(method: &Method, headers: &'a HeaderMap) -> Result<&'a [u8], HandshakeError> {
    if !has_token(headers, header::UPGRADE, "websocket") || !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if method != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(HandshakeError::MissingKey)?.as_bytes();
    // The key is 16 random bytes, base64-encoded: always 24 characters.
    if key.len() != 24 {
        return Err(HandshakeError::MissingKey);
    }
    Ok(key)
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// The subprotocols a client offered, in order.
pub fn requested_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn upgrade_checks() {
        let mut h = HeaderMap::new();
        assert_eq!(check_upgrade(&Method::GET, &h), Err(HandshakeError::NotUpgrade));
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert_eq!(check_upgrade(&Method::POST, &h), Err(HandshakeError::MethodNotGet));
        assert_eq!(check_upgrade(&Method::GET, &h), Err(HandshakeError::UnsupportedVersion));
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        assert_eq!(check_upgrade(&Method::GET, &h), Err(HandshakeError::MissingKey));
        h.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        assert_eq!(check_upgrade(&Method::GET, &h).unwrap(), b"dGhlIHNhbXBsZSBub25jZQ==");
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "waygate.terminal.v1, tok123".parse().unwrap());
        assert_eq!(requested_protocols(&h).collect::<Vec<_>>(), ["waygate.terminal.v1", "tok123"]);
    }
}
