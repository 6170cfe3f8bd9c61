//! Key handling shared by the server and the admin CLI: the host key on disk and the parsing of
//! OpenSSH public key lines into what the store keeps.

use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use warren_store::NewKey;

/// Problems with keys, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The input is not an OpenSSH public key line.
    #[error("not an OpenSSH public key line (expected e.g. 'ssh-ed25519 AAAA… comment'): {0}")]
    BadPublicKey(String),
    /// A key type we do not accept.
    #[error("key type {0} is not accepted; use ed25519, ecdsa or rsa")]
    Unsupported(String),
    /// The host key file exists but cannot be read.
    #[error("cannot read host key {path}: {reason}")]
    HostKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Writing the new host key failed.
    #[error("cannot write host key {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`) into a [`NewKey`] with its
/// `SHA256:` fingerprint, the same one `ssh-keygen -l` prints.
pub fn parse_public_key(line: &str) -> Result<NewKey, KeyError> {
    let line = line.trim();
    let mut key =
        PublicKey::from_openssh(line).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => {}
        other => return Err(KeyError::Unsupported(other.as_str().to_owned())),
    }
    let comment = key.comment().to_string();
    key.set_comment("");
    let public_key = key
        .to_openssh()
        .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
    Ok(NewKey {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().as_str().to_owned(),
        public_key: public_key.trim().to_owned(),
        comment,
    })
}

/// Loads the server's ed25519 host key from `path`, generating and saving it (mode 0600) on
/// first start so clients see the same host key across restarts.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let shown = path.display().to_string();
    if path.exists() {
        return russh::keys::load_secret_key(path, None).map_err(|e| KeyError::HostKey {
            path: shown,
            reason: e.to_string(),
        });
    }
    let key =
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| KeyError::Write {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Write {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    write_private(path, pem.as_bytes()).map_err(|e| KeyError::Write {
        path: shown,
        reason: e.to_string(),
    })?;
    Ok(key)
}

/// `SHA256:…` of a host key, for the startup log (what `ssh` shows on first connect).
pub fn host_key_fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ed25519_line_and_fingerprints_like_ssh_keygen() {
        // Fingerprint checked with `ssh-keygen -lf`.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdWbcWbfkNwRvjvTkDgHvOBwNW4VdtUEIUxEW1j5hh0 alice@laptop";
        let k = parse_public_key(line).expect("parse");
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "alice@laptop");
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert!(!k.public_key.contains("alice"));
    }

    /// Keys of every kind OpenSSH makes, fingerprinted by us and by `ssh-keygen -lf`: the
    /// fingerprint is what `broker key rm` and the refusal lines print, so the two must agree.
    #[test]
    fn fingerprints_match_ssh_keygen() {
        let dir = std::env::temp_dir().join(format!("warren-fp-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let path = dir.join(kind);
            let made = std::process::Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", "me@box", "-t", kind, "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen (openssh-client) is installed by scripts/test");
            assert!(made.success());
            let pub_path = path.with_extension("pub");
            let line = std::fs::read_to_string(&pub_path).expect("pub");
            let ours = parse_public_key(&line).expect("parse").fingerprint;
            let out = std::process::Command::new("ssh-keygen")
                .args(["-E", "sha256", "-lf"])
                .arg(&pub_path)
                .output()
                .expect("ssh-keygen -lf");
            let theirs = String::from_utf8_lossy(&out.stdout);
            let theirs = theirs.split_whitespace().nth(1).unwrap_or_default();
            assert_eq!(ours, theirs, "{kind}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            parse_public_key("hello"),
            Err(KeyError::BadPublicKey(_))
        ));
        assert!(matches!(
            parse_public_key(""),
            Err(KeyError::BadPublicKey(_))
        ));
    }

    #[test]
    fn host_key_is_created_once() {
        let dir = std::env::temp_dir().join(format!("warren-hk-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("host_key");
        let a = load_or_create_host_key(&p).expect("create");
        let b = load_or_create_host_key(&p).expect("load");
        assert_eq!(host_key_fingerprint(&a), host_key_fingerprint(&b));
        let _ = std::fs::remove_dir_all(dir);
    }
}
