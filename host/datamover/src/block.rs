//! A block in flight: its bytes as the parts an HTTP body carried them in,
//! hashed and written part by part, never joined into one buffer — the
//! mover receives a block from one endpoint and sends it to another, the
//! agent receives one and writes it to its disk.

use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::digest::block_digest;

pub(crate) struct Block {
    parts: Vec<Bytes>,
}

impl Block {
    /// The block a body of exactly `expected` bytes carries, read part by
    /// part from `body` (no further than one part past `expected`); a
    /// message saying what was wrong otherwise.
    pub(crate) async fn receive<E: std::fmt::Display>(
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        expected: u64,
    ) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut received = 0u64;
        while let Some(part) = body.next().await {
            let part = part.map_err(|e| format!("reading the body: {e}"))?;
            received += part.len() as u64;
            if received > expected {
                return Err(format!(
                    "the body holds more than the {expected} bytes expected"
                ));
            }
            parts.push(part);
        }
        if received != expected {
            return Err(format!(
                "the body holds {received} bytes, not the {expected} expected"
            ));
        }
        Ok(Self { parts })
    }

    pub(crate) fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    /// The parts, for a body that sends them on.
    pub(crate) fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// The block's digest, hashed on a blocking thread: a copy's blocks
    /// are futures of one task, and hashed inline they would all be
    /// hashed on the one core that task runs on.
    pub(crate) async fn digest(&self) -> String {
        let parts = self.parts.clone();
        tokio::task::spawn_blocking(move || block_digest(&parts))
            .await
            .unwrap_or_else(|_| block_digest(&self.parts))
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.parts.iter().all(|p| p.iter().all(|b| *b == 0))
    }

    /// Write the block at `offset` of `file`, part by part.
    pub(crate) fn write_at(&self, file: &File, offset: u64) -> std::io::Result<()> {
        let mut at = offset;
        for part in &self.parts {
            file.write_all_at(part, at)?;
            at += part.len() as u64;
        }
        Ok(())
    }
}

impl From<Bytes> for Block {
    fn from(bytes: Bytes) -> Self {
        Self { parts: vec![bytes] }
    }
}

impl From<Block> for Bytes {
    /// The parts joined (a single part as it is).
    fn from(block: Block) -> Self {
        match <[Bytes; 1]>::try_from(block.parts) {
            Ok([one]) => one,
            Err(parts) => parts.concat().into(),
        }
    }
}
