//! Secrets at rest, ids and HMAC.
//!
//! Merchant secrets must be usable (HMAC needs the secret itself) yet never sit in the store
//! in the clear: they are sealed with AES-256-GCM under a master key kept beside the data
//! (`<data_dir>/master.key`, created on first start with mode 0600) or given as
//! `KASSA_MASTER_KEY` (64 hex characters). Production deployments give the key from a secret
//! manager; losing it makes the stored merchant secrets unreadable.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const NONCE_BYTES: usize = 12;
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("a sealed secret does not open with this master key")]
    Open,
    #[error("the system random source failed")]
    Random,
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

/// `prefix` + 24 random hex characters.
pub fn random_id(prefix: &str) -> Result<String, CryptoError> {
    Ok(format!("{prefix}{}", hex::encode(random_bytes::<12>()?)))
}

/// `prefix` + 24 hex characters derived from `parts`: the same parts give the same id.
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    format!("{prefix}{}", hex::encode(&hash.finalize()[..12]))
}

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

pub fn hmac_sha256(key: &[u8], message_parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in message_parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Seals and opens secrets with the master key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// From `KASSA_MASTER_KEY` if given, else the key file, created if absent.
    pub fn load_or_create(key_file: &Path, from_env: Option<&str>) -> Result<Sealer, CryptoError> {
        let key = match from_env {
            Some(hex_key) => decode_key(hex_key.trim())?,
            None => match std::fs::read_to_string(key_file) {
                Ok(text) => decode_key(text.trim())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(key_file)?,
                Err(e) => {
                    return Err(CryptoError::MasterKey(format!(
                        "{}: {e}",
                        key_file.display()
                    )));
                }
            },
        };
        let cipher = Aes256Gcm::new_from_slice(&key)
            .map_err(|_| CryptoError::MasterKey("bad length".into()))?;
        Ok(Sealer { cipher })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes = random_bytes::<NONCE_BYTES>()?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext)
            .map_err(|_| CryptoError::Open)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_BYTES {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Open)
    }
}

fn decode_key(hex_key: &str) -> Result<[u8; KEY_BYTES], CryptoError> {
    let bytes = hex::decode(hex_key).map_err(|_| CryptoError::MasterKey("not hex".into()))?;
    bytes.try_into().map_err(|_| {
        CryptoError::MasterKey(format!("must be {KEY_BYTES} bytes (64 hex characters)"))
    })
}

fn create_key_file(path: &Path) -> Result<[u8; KEY_BYTES], CryptoError> {
    use std::io::Write;
    let key = random_bytes::<KEY_BYTES>()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| CryptoError::MasterKey(e.to_string()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(hex::encode(key).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| CryptoError::MasterKey(e.to_string()))?;
            tracing::info!(path = %path.display(), "created a new master key");
            Ok(key)
        }
        // Another process (the CLI, a second start) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text =
                std::fs::read_to_string(path).map_err(|e| CryptoError::MasterKey(e.to_string()))?;
            decode_key(text.trim())
        }
        Err(e) => Err(CryptoError::MasterKey(format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let dir = std::env::temp_dir().join(format!("kassa-crypto-{}", std::process::id()));
        let sealer = Sealer::load_or_create(&dir.join("master.key"), None).unwrap();
        let sealed = sealer.seal(b"sk_secret").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"sk_secret"));
        assert_eq!(sealer.open(&sealed).unwrap(), b"sk_secret");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open(&tampered).is_err());
        let again = Sealer::load_or_create(&dir.join("master.key"), None).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"sk_secret");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn derived_ids_are_stable_and_unambiguous() {
        assert_eq!(
            derived_id("pay_", &["m", "k"]),
            derived_id("pay_", &["m", "k"])
        );
        assert_ne!(
            derived_id("pay_", &["m", "k"]),
            derived_id("pay_", &["mk", ""])
        );
        assert_eq!(derived_id("pay_", &["m", "k"]).len(), 4 + 24);
    }
}
