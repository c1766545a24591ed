//! Block and whole-disk digests.

use sha2::{Digest, Sha256};

/// The digest of a block given as the parts it arrived in (as an HTTP
/// body carries it): that of the parts joined, without joining them.
pub(crate) fn block_digest(parts: &[impl AsRef<[u8]>]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_ref());
    }
    hex::encode(hasher.finalize())
}

/// The digest of an all-zero block of `len` bytes (what a hole reads as).
pub fn zero_block_digest(len: usize) -> String {
    let mut hasher = Sha256::new();
    let zeros = [0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len());
        hasher.update(&zeros[..n]);
        left -= n;
    }
    hex::encode(hasher.finalize())
}

/// The whole-disk digest: SHA-256 over the concatenated block digests.
pub fn disk_digest(blocks: &[String]) -> String {
    let mut hasher = Sha256::new();
    for b in blocks {
        hasher.update(b.as_bytes());
    }
    hex::encode(hasher.finalize())
}
