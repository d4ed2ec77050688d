//! Passwords and tokens: argon2id hashes, random secrets, and the hashes we store of them.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Checks a new password's length; the rest is the owner's business.
pub fn check_new_password(password: &str) -> Result<()> {
    let count = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&count) {
        return Err(Error::invalid(
            "password",
            format!("le mot de passe doit contenir de {MIN_PASSWORD_CHARS} à {MAX_PASSWORD_CHARS} caractères"),
        ));
    }
    Ok(())
}

/// Hashes a password with argon2id. Slow on purpose: call it off the async runtime.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| Error::Internal(format!("argon2 hashing failed: {err}")))
}

/// Whether `password` matches `stored` (a PHC string). Slow on purpose.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the e-mail is unknown, so that a login attempt takes
/// the same time whether the account exists or not.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password("not a real password, only here for timing").unwrap_or_default()
    })
}

/// A new random secret for a session or API token: 32 bytes, hex, prefixed so that a
/// leaked token is recognisable in logs and scanners.
pub fn new_token(kind: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("gdn_{kind}_{}", hex::encode(bytes))
}

/// What we store of a token: its SHA-256. Tokens are long and random, so a fast hash
/// is enough (unlike passwords).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks and hashes a new password on the blocking pool, off the async runtime.
pub async fn hash_new_password(password: String) -> Result<String> {
    check_new_password(&password)?;
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|err| Error::Internal(format!("password hashing task failed: {err}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_hash() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert!(!verify_password("anything", "not a phc string"));
        let token = new_token("api");
        assert_eq!(token_hash(&token).len(), 64);
        assert_ne!(new_token("api"), token);
    }
}
