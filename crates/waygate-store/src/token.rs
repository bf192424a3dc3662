use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits, URL-safe base64 without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens are stored as SHA-256 digests: a database leak yields no usable token. A fast hash
/// is right here (unlike passwords) because the input already carries 256 bits of entropy.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = super::random_token();
        let b = super::random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(super::hash_token(&a), super::hash_token(&a));
        assert_ne!(super::hash_token(&a), a);
    }
}
