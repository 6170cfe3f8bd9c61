//! Encryption of private keys at rest.
//!
//! ChaCha20-Poly1305 (ring) with a 32-byte key from the configuration or from a key file the
//! broker creates (mode 0600) in its data directory on first start. Each sealed value is
//! `v1:` + base64(random 96-bit nonce ‖ ciphertext ‖ tag); the associated data is the row's
//! name (certificate name, CA directory URL), so a sealed key copied to another row does not
//! open. Losing the key file means re-issuing certificates and creating a new ACME account,
//! nothing worse.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::AcmeError;

const PREFIX: &str = "v1:";

/// Encrypts and decrypts private keys for the store. Cheap to clone; `Debug` shows no key.
#[derive(Clone)]
pub struct KeyCipher {
    key: Arc<LessSafeKey>,
}

impl std::fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCipher(MASKED)")
    }
}

impl KeyCipher {
    /// A cipher over 32 raw key bytes.
    pub fn from_bytes(key: &[u8; 32]) -> Result<Self, AcmeError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| AcmeError::Cipher("key rejected".into()))?;
        Ok(Self {
            key: Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// A cipher from the standard base64 of 32 bytes (`head -c32 /dev/urandom | base64`), as
    /// given in the configuration.
    pub fn from_base64(encoded: &str) -> Result<Self, AcmeError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|e| AcmeError::Cipher(format!("key is not base64: {e}")))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            AcmeError::Cipher(format!("key must be 32 bytes, got {}", b.len()))
        })?;
        Self::from_bytes(&key)
    }

    /// A fresh random key, as standard base64 (what [`KeyCipher::from_base64`] reads): the
    /// first node of a cluster stores one for all.
    pub fn generate_base64() -> Result<String, AcmeError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| AcmeError::Internal("no randomness".into()))?;
        Ok(STANDARD.encode(key))
    }

    /// Reads the key file at `path`, creating it with a fresh random key (mode 0600) if it does
    /// not exist. Safe when two processes start at once: the file appears whole or not at all
    /// (written aside, then hard-linked into place), and the loser reads the winner's key.
    pub fn load_or_create(path: &Path) -> Result<Self, AcmeError> {
        let io = |source| AcmeError::KeyFile {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::from_base64(&text),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            Err(_) => {}
        }
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| AcmeError::Internal("no randomness".into()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = write_private(&tmp, format!("{}\n", STANDARD.encode(key)).as_bytes());
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new key-encryption key file");
                Self::from_bytes(&key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_base64(&std::fs::read_to_string(path).map_err(io)?)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypts `plaintext`, bound to `context` (the row it is stored in).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, AcmeError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| AcmeError::Internal("no randomness".into()))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| AcmeError::Internal("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Decrypts what [`KeyCipher::seal`] produced for the same `context`. Fails with
    /// [`AcmeError::Cipher`] on a wrong key, a wrong context or tampering.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, AcmeError> {
        let bad =
            |why: &str| AcmeError::Cipher(format!("cannot decrypt the value for {context}: {why}"));
        let encoded = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("unknown format"))?;
        let raw = STANDARD.decode(encoded).map_err(|_| bad("not base64"))?;
        if raw.len() < NONCE_LEN {
            return Err(bad("too short"));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("bad nonce"))?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| bad("wrong key or corrupted"))?;
        Ok(plain.to_vec())
    }
}

/// Creates `path` (which must not exist) readable by its owner only, and writes `data`.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_bound_to_context() {
        let c = KeyCipher::from_bytes(&[9; 32]).expect("key");
        let sealed = c
            .seal("chat.example.com", b"-----BEGIN PRIVATE KEY-----")
            .expect("seal");
        assert!(sealed.starts_with("v1:") && !sealed.contains("PRIVATE"));
        assert_ne!(
            sealed,
            c.seal("chat.example.com", b"-----BEGIN PRIVATE KEY-----")
                .expect("seal")
        );
        assert_eq!(
            c.open("chat.example.com", &sealed).expect("open"),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert!(
            c.open("other.example.com", &sealed).is_err(),
            "context is bound"
        );
        let other = KeyCipher::from_bytes(&[8; 32]).expect("key");
        assert!(
            other.open("chat.example.com", &sealed).is_err(),
            "wrong key"
        );
        assert!(c.open("chat.example.com", "v1:AAAA").is_err());
        assert!(c.open("chat.example.com", "plain").is_err());
        assert_eq!(format!("{c:?}"), "KeyCipher(MASKED)");
    }

    #[test]
    fn base64_key_must_be_32_bytes() {
        let encoded = STANDARD.encode([1u8; 32]);
        assert!(KeyCipher::from_base64(&format!(" {encoded}\n")).is_ok());
        assert!(KeyCipher::from_base64(&STANDARD.encode([1u8; 16])).is_err());
        assert!(KeyCipher::from_base64("not base64!").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("acme.key");
        let first = KeyCipher::load_or_create(&path).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.seal("x", b"secret").expect("seal");
        let again = KeyCipher::load_or_create(&path).expect("reuse");
        assert_eq!(again.open("x", &sealed).expect("same key"), b"secret");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp file left"
        );
    }
}
