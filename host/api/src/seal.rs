//! Sealing of site credentials registered through the API: each value is
//! encrypted with XChaCha20-Poly1305 under the host's seal key (32 random
//! bytes in a file, created with mode 0600 on first start) before it
//! reaches the store, with the site and credential name as associated data
//! so a sealed value cannot be moved to another site or key. Every host of
//! one store needs the same key file; a host with another key refuses to
//! bind the site and says so.

use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const PREFIX: &str = "v1:";

/// Seals and opens credential values.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the seal key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error(
        "credential '{0}' cannot be opened with this host's seal key; give every host of one \
         store the same seal key file, or register the site's credentials again"
    )]
    Open(String),
}

impl Sealer {
    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// The key in `path`, created (0600) when the file does not exist.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let fail = |reason: String| SealError::Key {
            path: path.display().to_string(),
            reason,
        };
        let hex_key = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let text = hex::encode(key);
                write_private(path, &text).map_err(|e| fail(format!("creating it: {e}")))?;
                text
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let bytes = hex::decode(&hex_key).map_err(|_| fail("is not hex".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| fail("must hold 32 bytes as 64 hex digits".into()))?;
        Ok(Self::from_key(key))
    }

    /// Seal `value` of credential `name` of `site`.
    pub fn seal(&self, site: &str, name: &str, value: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = format!("{site}\0{name}");
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length a request can carry");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// Open what [`Sealer::seal`] sealed for the same site and name.
    pub fn open(&self, site: &str, name: &str, sealed: &str) -> Result<String, SealError> {
        let fail = || SealError::Open(name.to_owned());
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(fail)?;
        let (nonce, body) = bytes.split_at(24);
        let aad = format!("{site}\0{name}");
        let clear = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        String::from_utf8(clear).map_err(|_| fail())
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::Sealer;

    #[test]
    fn sealed_values_open_only_for_their_site_name_and_key() {
        let sealer = Sealer::from_key([7; 32]);
        let sealed = sealer.seal("east", "password", "hunter2 hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            sealer.open("east", "password", &sealed).expect("ok"),
            "hunter2 hunter2"
        );
        assert!(sealer.open("west", "password", &sealed).is_err());
        assert!(sealer.open("east", "token", &sealed).is_err());
        assert!(
            Sealer::from_key([8; 32])
                .open("east", "password", &sealed)
                .is_err()
        );
        assert_ne!(sealed, sealer.seal("east", "password", "hunter2 hunter2"));
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join("keys/seal.key");
        let sealed = Sealer::from_file(&path).expect("ok").seal("s", "k", "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("ok").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            Sealer::from_file(&path)
                .expect("ok")
                .open("s", "k", &sealed)
                .expect("ok"),
            "v"
        );
        std::fs::write(&path, "zz").expect("ok");
        let err = Sealer::from_file(&path).expect_err("refused").to_string();
        assert!(err.contains("hex"), "{err}");
    }
}
