//! Where a copy records the blocks it has finished, so an interrupted copy
//! resumes instead of starting over.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Completed blocks of one copy.
pub trait Checkpoint: Send {
    /// Blocks already copied and verified at the target.
    fn completed(&self) -> BTreeSet<u64>;
    /// Record a finished block durably before the copy moves on.
    fn complete(&mut self, block: u64) -> std::io::Result<()>;
}

#[derive(Debug, Default)]
pub struct MemoryCheckpoint(pub BTreeSet<u64>);

impl Checkpoint for MemoryCheckpoint {
    fn completed(&self) -> BTreeSet<u64> {
        self.0.clone()
    }

    fn complete(&mut self, block: u64) -> std::io::Result<()> {
        self.0.insert(block);
        Ok(())
    }
}

/// A checkpoint in a JSON file, replaced atomically on every update.
#[derive(Debug)]
pub struct FileCheckpoint {
    path: PathBuf,
    state: FileState,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileState {
    completed: BTreeSet<u64>,
}

impl FileCheckpoint {
    /// Open (or start) the checkpoint at `path`.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "checkpoint {} is unreadable ({e}); delete it to copy from scratch",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::default(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, state })
    }
}

impl Checkpoint for FileCheckpoint {
    fn completed(&self) -> BTreeSet<u64> {
        self.state.completed.clone()
    }

    fn complete(&mut self, block: u64) -> std::io::Result<()> {
        self.state.completed.insert(block);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.state)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}
