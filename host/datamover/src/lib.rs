//! The data mover (DESIGN.md §7): copies a disk image from an export
//! endpoint to an import endpoint — the `disk-endpoint` records plugins
//! return — streaming with bounded memory over parallel block ranges,
//! resumable from a checkpoint, moving only changed blocks on a resync, and
//! verified block by block before a run may cut over.
//!
//! It also holds the mover agent (`agent`): the small HTTP server that
//! exposes one disk image for ranged reads, writes and block digests, which
//! plugins place next to the data where a platform has no such API.
//!
//! Digests: SHA-256 per block; the whole-disk digest is the SHA-256 of the
//! concatenated block digests (so it is computed from the block list, never
//! by reading the disk twice).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod agent;
mod block;
mod checkpoint;
mod copy;
mod digest;
mod endpoint;

pub use checkpoint::{Checkpoint, FileCheckpoint, MemoryCheckpoint};
pub use copy::{
    CopyOptions, CopyReport, Mode, MoveError, copy, read_range, verify_endpoints, write_range,
};
pub use digest::{disk_digest, zero_block_digest};
pub use endpoint::Endpoint;
