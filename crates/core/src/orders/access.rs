//! Who may read or cancel an order: an admin, its owner (the verified shopper whose `sub` it carries), or
//! whoever holds its order access token. A guest's order gets such a token when it is placed: 32 random
//! bytes, shown once in the answer, kept only as its SHA-256 digest. Anyone else is told the order does
//! not exist, the same answer as for an unknown id, so ids reveal nothing.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};

pub use crate::domain::OrderAccess;

/// A new order access token: the value for the client, and the digest to store.
pub fn new_access_token() -> (String, Vec<u8>) {
    let bytes: [u8; 32] = rand::random();
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = access_token_hash(&token);
    (token, hash)
}

/// The digest stored for, and compared with, an order access token.
pub fn access_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_digest_matches() {
        let (a, hash_a) = new_access_token();
        let (b, _) = new_access_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(access_token_hash(&a), hash_a);
        assert_ne!(access_token_hash(&b), hash_a);
    }
}
