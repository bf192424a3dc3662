//! WebSocket connect auth with JWTs (HS256 with `WAYGATE_JWT_SECRET`, RS256/ES256 with
//! `WAYGATE_JWT_PUBLIC_KEY_FILE`). `sub` becomes the connection's user; the optional
//! `subscribe` and `publish` claims (lists of channel patterns: exact names, `prefix*`, and
//! `{sub}` for the user's own id) limit what the connection may do.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use waygate_config::Config;
use waygate_proto::ErrorCode;

use crate::http::error::ApiError;

/// The subprotocol a browser offers to carry its JWT: `Sec-WebSocket-Protocol: waygate.jwt, <token>`.
pub const JWT_PROTOCOL: &str = "waygate.jwt";

pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConnAuth {
    pub user_id: Option<String>,
    subscribe: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<Vec<String>>,
}

impl JwtVerifier {
    /// `None` when no JWT key is configured (connections are anonymous).
    pub fn from_config(config: &Config) -> Result<Option<JwtVerifier>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret.expose().as_bytes())));
        }
        if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                keys.push((Algorithm::RS256, k));
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                keys.push((Algorithm::ES256, k));
            } else {
                return Err(format!("{} is neither an RSA nor an EC public key in PEM", path.display()));
            }
        }
        Ok(if keys.is_empty() { None } else { Some(JwtVerifier { keys }) })
    }

    pub fn verify(&self, token: &str) -> Result<ConnAuth, ApiError> {
        let invalid = |why: &str| ApiError::new(ErrorCode::TokenInvalid, format!("invalid token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let (alg, key) =
            self.keys.iter().find(|(a, _)| *a == header.alg).ok_or_else(|| invalid("unexpected algorithm"))?;
        let mut validation = Validation::new(*alg);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::new(ErrorCode::TokenExpired, "the token has expired")
            }
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => invalid("not valid yet"),
            _ => invalid("signature or claims rejected"),
        })?;
        let c = data.claims;
        Ok(ConnAuth { user_id: c.sub, subscribe: c.subscribe, publish: c.publish })
    }
}

impl ConnAuth {
    pub fn may_subscribe(&self, channel: &str) -> bool {
        allowed(&self.subscribe, channel, self.user_id.as_deref())
    }

    pub fn may_publish(&self, channel: &str) -> bool {
        allowed(&self.publish, channel, self.user_id.as_deref())
    }
}

fn allowed(patterns: &Option<Vec<String>>, channel: &str, sub: Option<&str>) -> bool {
    let Some(patterns) = patterns else { return true };
    patterns.iter().any(|p| {
        let p = match sub {
            Some(s) => p.replace("{sub}", s),
            None if p.contains("{sub}") => return false,
            None => p.clone(),
        };
        match p.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => p == channel,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_patterns() {
        let auth = ConnAuth {
            user_id: Some("u1".into()),
            subscribe: Some(vec!["news".into(), "room.*".into(), "user.{sub}".into()]),
            publish: Some(vec![]),
        };
        assert!(auth.may_subscribe("news"));
        assert!(auth.may_subscribe("room.42"));
        assert!(auth.may_subscribe("user.u1"));
        assert!(!auth.may_subscribe("user.u2"));
        assert!(!auth.may_subscribe("newsroom"));
        assert!(!auth.may_publish("news"), "an empty list allows nothing");
        assert!(ConnAuth::default().may_publish("anything"), "no claim, no limit");
    }
}
