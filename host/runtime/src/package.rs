//! Plugin packages: a component, its manifest and an optional ed25519
//! signature over the manifest (which carries the component's SHA-256, so
//! the signature covers both). Verified before anything is compiled.
//!
//! On disk a package is a folder with `plugin.wasm`, `manifest.toml` and,
//! when signed, `manifest.sig` (base64 of the 64-byte signature).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::LoadError;
use crate::manifest::Manifest;

pub const WASM_FILE: &str = "plugin.wasm";
pub const MANIFEST_FILE: &str = "manifest.toml";
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// The bytes of a package as uploaded or read from disk.
#[derive(Clone)]
pub struct PluginPackage {
    pub manifest: String,
    pub wasm: Vec<u8>,
    pub signature: Option<String>,
}

impl std::fmt::Debug for PluginPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginPackage")
            .field("wasm_bytes", &self.wasm.len())
            .field("signed", &self.signature.is_some())
            .finish()
    }
}

/// Which signers the host trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub trusted_keys: Vec<VerifyingKey>,
    /// Load unsigned packages (development only).
    pub allow_unsigned: bool,
}

impl TrustPolicy {
    /// Parse a base64 public key as written by `rebound plugin keygen`.
    pub fn parse_key(text: &str) -> Result<VerifyingKey, String> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| format!("public key is not base64: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "an ed25519 public key is 32 bytes".to_owned())?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A signing key encoded as base64 of its 32-byte seed.
pub fn encode_signing_key(key: &SigningKey) -> String {
    B64.encode(key.to_bytes())
}

pub fn decode_signing_key(text: &str) -> Result<SigningKey, String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("signing key is not base64: {e}"))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an ed25519 signing key is a 32-byte seed".to_owned())?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn encode_verifying_key(key: &VerifyingKey) -> String {
    B64.encode(key.to_bytes())
}

impl PluginPackage {
    pub fn read_dir(dir: &Path) -> Result<Self, LoadError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| LoadError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let manifest =
            String::from_utf8(read(MANIFEST_FILE)?).map_err(|_| LoadError::Manifest {
                field: "(document)".into(),
                reason: "manifest.toml is not UTF-8".into(),
            })?;
        let wasm = read(WASM_FILE)?;
        let signature = match std::fs::read_to_string(dir.join(SIGNATURE_FILE)) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(LoadError::Io {
                    path: dir.join(SIGNATURE_FILE).display().to_string(),
                    source,
                });
            }
        };
        Ok(Self {
            manifest,
            wasm,
            signature,
        })
    }

    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(WASM_FILE), &self.wasm)?;
        std::fs::write(dir.join(MANIFEST_FILE), &self.manifest)?;
        match &self.signature {
            Some(sig) => std::fs::write(dir.join(SIGNATURE_FILE), sig),
            None => match std::fs::remove_file(dir.join(SIGNATURE_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Build a package from a component and a manifest template: fills in the
    /// digest and, given a key, signs.
    pub fn build(
        template: &str,
        wasm: Vec<u8>,
        key: Option<&SigningKey>,
    ) -> Result<Self, LoadError> {
        let mut manifest = Manifest::parse(template)?;
        manifest.sha256 = Some(sha256_hex(&wasm));
        let manifest = manifest.render();
        let signature = key.map(|k| B64.encode(k.sign(manifest.as_bytes()).to_bytes()));
        Ok(Self {
            manifest,
            wasm,
            signature,
        })
    }

    /// Check digest and signature; returns the parsed manifest.
    pub fn verify(&self, trust: &TrustPolicy) -> Result<Manifest, LoadError> {
        let manifest = Manifest::parse(&self.manifest)?;
        let plugin = manifest.name.clone();
        let expected = manifest
            .sha256
            .clone()
            .ok_or_else(|| LoadError::MissingDigest {
                plugin: plugin.clone(),
            })?;
        let actual = sha256_hex(&self.wasm);
        if expected != actual {
            return Err(LoadError::DigestMismatch {
                plugin,
                expected,
                actual,
            });
        }
        let Some(sig) = &self.signature else {
            return if trust.allow_unsigned {
                Ok(manifest)
            } else {
                Err(LoadError::Unsigned { plugin })
            };
        };
        let bad = |hint: &str| LoadError::BadSignature {
            plugin: plugin.clone(),
            trusted: trust.trusted_keys.len(),
            hint: hint.to_owned(),
        };
        let bytes = B64
            .decode(sig.trim())
            .map_err(|_| bad(" (manifest.sig is not base64)"))?;
        let sig = Signature::from_slice(&bytes)
            .map_err(|_| bad(" (manifest.sig is not a 64-byte signature)"))?;
        if trust.trusted_keys.is_empty() {
            return Err(bad(
                "; no trusted keys are configured (add the publisher's public key)",
            ));
        }
        if trust
            .trusted_keys
            .iter()
            .any(|k| k.verify(self.manifest.as_bytes(), &sig).is_ok())
        {
            Ok(manifest)
        } else {
            Err(bad(""))
        }
    }
}
