//! Guest writes: what the software inside a workload writes to its disks,
//! scripted from outside. Every simulated site answers
//! `POST /_lab/guest-writes` with `{"disk": ID, "offset": N, "length": N}`
//! — `ID` the disk's id as the platform's API names it (the id a plugin's
//! inventory reports in `disk-spec.id`) — by writing `length` random bytes
//! at `offset` of that disk, as its workload's guest would: the platform
//! tracks the write as its own (an oVirt engine marks it in the disk's
//! dirty bitmap), and a later snapshot holds it. A disk no running
//! workload uses cannot be written: a stopped or fenced guest writes
//! nothing. The answer echoes the write with the SHA-256 of the bytes
//! written (`"sha256"`, hex), so a test can find them again in a copy of
//! the disk; a refusal is
//! `{"error": "..."}` with 400 (bad request, a range past the disk's
//! end), 404 (no such disk) or 409 (its workload does not run).
//!
//! The conformance kit (`rebound plugin test --guest-writes URL`) writes
//! through it between two recovery points and checks the plugin's
//! `changed-blocks` covers every byte written.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The largest write one request may ask for.
pub const MAX_LENGTH: u64 = 16 << 20;

/// One guest write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestWrite {
    /// The disk's id as the platform names it.
    pub disk: String,
    /// Where the write starts, in bytes.
    pub offset: u64,
    /// How many bytes it writes (1 to [`MAX_LENGTH`]).
    pub length: u64,
}

impl GuestWrite {
    /// Why this write cannot be asked for, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        if self.disk.is_empty() {
            return Some("disk is empty; give the disk's id as the platform names it".into());
        }
        if self.length == 0 || self.length > MAX_LENGTH {
            return Some(format!(
                "length is {}; give 1 to {MAX_LENGTH} bytes",
                self.length
            ));
        }
        if self.offset.checked_add(self.length).is_none() {
            return Some(format!("offset {} + length overflows", self.offset));
        }
        None
    }

    /// The bytes the guest writes: random, and with no all-zero 512-byte
    /// sector, so no platform could take the write for a hole.
    pub fn data(&self) -> Vec<u8> {
        (0..self.length).map(|_| rand::random::<u8>() | 1).collect()
    }
}

/// Whether disk `disk` of `size` bytes has room for `len` bytes at
/// `offset`.
pub(crate) fn fits(disk: &str, offset: u64, len: usize, size: u64) -> Result<(), Refused> {
    let end = offset.saturating_add(len as u64);
    if end > size {
        return Err(Refused::Invalid(format!(
            "the write ends at {end}, past the end of disk {disk} ({size} bytes)"
        )));
    }
    Ok(())
}

/// Write `data` at `offset` of image `image` of `disks` (disk `disk`'s
/// file), refused when it does not fit.
pub(crate) fn write_image(
    disks: &crate::disk::Disks,
    image: &str,
    disk: &str,
    offset: u64,
    data: &[u8],
) -> Result<(), Refused> {
    fits(disk, offset, data.len(), disks.size(image)?)?;
    disks.write(image, offset, data)?;
    Ok(())
}

/// Why a site did not write.
#[derive(Debug)]
pub enum Refused {
    /// The request is wrong (400).
    Invalid(String),
    /// No such disk (404).
    NoDisk(String),
    /// The disk's workload does not run (409).
    NotRunning(String),
    /// The site could not write its image (500).
    Io(std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) | Self::NoDisk(m) | Self::NotRunning(m) => f.write_str(m),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<std::io::Error> for Refused {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// The site's answer to a guest write of `data`: the write echoed with
/// the data's digest, or the refusal.
pub fn answer(write: &GuestWrite, data: &[u8], result: Result<(), Refused>) -> Response {
    use sha2::Digest;
    let (status, message) = match result {
        Ok(()) => {
            return Json(json!({
                "disk": write.disk,
                "offset": write.offset,
                "length": write.length,
                "sha256": hex::encode(sha2::Sha256::digest(data)),
            }))
            .into_response();
        }
        Err(Refused::Invalid(m)) => (StatusCode::BAD_REQUEST, m),
        Err(Refused::NoDisk(m)) => (StatusCode::NOT_FOUND, m),
        Err(Refused::NotRunning(m)) => (StatusCode::CONFLICT, m),
        Err(Refused::Io(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing disk {}: {e}", write.disk),
        ),
    };
    (status, Json(json!({ "error": message }))).into_response()
}

/// Parse a request body into a write, or say what to fix.
pub fn parse(body: &[u8]) -> Result<GuestWrite, String> {
    let write: GuestWrite = serde_json::from_slice(body).map_err(|e| {
        format!("not a guest write ({{\"disk\": ID, \"offset\": N, \"length\": N}}): {e}")
    })?;
    match write.invalid() {
        Some(m) => Err(m),
        None => Ok(write),
    }
}

/// The 400 answer to a body [`parse`] refused.
pub fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_checked_before_any_site_sees_it() {
        assert!(parse(br#"{"disk": "d", "offset": 0, "length": 4096}"#).is_ok());
        for body in [
            &br#"{"disk": "d", "offset": 0}"#[..],
            br#"{"disk": "d", "offset": 0, "length": 0}"#,
            br#"{"disk": "d", "offset": 0, "length": 16777217}"#,
            br#"{"disk": "", "offset": 0, "length": 1}"#,
            br#"{"disk": "d", "offset": 18446744073709551615, "length": 2}"#,
            br#"{"disk": "d", "offset": 0, "length": 1, "sync": true}"#,
            b"not json",
        ] {
            let refused = parse(body).expect_err(&String::from_utf8_lossy(body));
            assert!(!refused.is_empty());
        }
    }

    #[test]
    fn the_data_has_no_zero_byte() {
        let w = GuestWrite {
            disk: "d".into(),
            offset: 0,
            length: 1 << 16,
        };
        assert!(w.data().iter().all(|b| *b != 0));
        assert!(fits("d", 0, 1 << 16, 1 << 16).is_ok());
        assert!(matches!(
            fits("d", 1, 1 << 16, 1 << 16),
            Err(Refused::Invalid(_))
        ));
    }
}
