//! Simulated disks as real sparse files in a site's state directory.
//!
//! A volume of N bytes is a file of length N whose unwritten ranges are
//! holes, so a lab of many large disks costs only the blocks written.
//! Snapshots, backups and images are real copies of a disk's blocks: the
//! copy reads the source in blocks and skips all-zero ones, so holes stay
//! holes and the copy costs what the data costs. Every simulator (OpenStack,
//! KubeVirt, the example site) keeps its disks in a [`DiskStore`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The unit of copying: all-zero blocks of this size are left as holes.
pub const BLOCK: usize = 64 << 10;

/// What a copy moved: the bytes of data written and the zero bytes skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub data_bytes: u64,
    pub zero_bytes: u64,
}

/// A directory of disk images, each named by an id (letters, digits, `-`,
/// `_` and `.`; ids name files, so nothing else is allowed).
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// Use `dir` (created if missing) for the disk images.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds disk `id`.
    pub fn path(&self, id: &str) -> io::Result<PathBuf> {
        let valid = !id.is_empty()
            && id != "."
            && id != ".."
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{id}' is not a valid disk id (letters, digits, '-', '_', '.')"),
            ));
        }
        Ok(self.dir.join(format!("{id}.img")))
    }

    /// A new disk of `size` bytes, all holes. Fails if `id` exists.
    pub fn create(&self, id: &str, size: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(id)?)?;
        file.set_len(size)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.path(id).is_ok_and(|p| p.is_file())
    }

    /// The disk's length in bytes.
    pub fn size(&self, id: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(id)?)?.len())
    }

    /// Grow or shrink a disk; growth is a hole.
    pub fn resize(&self, id: &str, size: u64) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(self.path(id)?)?
            .set_len(size)
    }

    /// The bytes the file system really holds for the disk (Unix only).
    #[cfg(unix)]
    pub fn allocated(&self, id: &str) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(fs::metadata(self.path(id)?)?.blocks() * 512)
    }

    /// A new disk `to` holding the blocks of `from`, holes kept as holes.
    pub fn copy(&self, from: &str, to: &str) -> io::Result<CopyStats> {
        let mut src = File::open(self.path(from)?)?;
        let len = src.metadata()?.len();
        let dst_path = self.path(to)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst_path)?;
        let copied = copy_sparse(&mut src, &mut dst, len);
        if copied.is_err() {
            // A half copy is no disk; leave nothing behind.
            let _ = fs::remove_file(&dst_path);
        }
        copied
    }

    /// Write `data` at `offset`, growing the disk if it ends past it.
    pub fn write_at(&self, id: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).open(self.path(id)?)?;
        let end = offset + data.len() as u64;
        if file.metadata()?.len() < end {
            file.set_len(end)?;
        }
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(data)
    }

    /// Read `len` bytes at `offset`; reading past the end is an error.
    pub fn read_at(&self, id: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.path(id)?)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0; len];
        file.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Fill a new disk `id` from a reader (an upload), holes for zero blocks.
    pub fn create_from(&self, id: &str, reader: &mut impl Read) -> io::Result<CopyStats> {
        let path = self.path(id)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let copied = copy_sparse(reader, &mut dst, u64::MAX);
        if copied.is_err() {
            let _ = fs::remove_file(&path);
        }
        copied
    }

    /// Remove a disk; removing one that is gone is not an error.
    pub fn delete(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Copy up to `limit` bytes from `src` to the start of `dst`, seeking over
/// all-zero blocks instead of writing them, then set `dst`'s length to what
/// was read so a trailing hole is kept.
fn copy_sparse(src: &mut impl Read, dst: &mut File, limit: u64) -> io::Result<CopyStats> {
    let zeros = [0u8; BLOCK];
    let mut buf = vec![0u8; BLOCK];
    let mut stats = CopyStats::default();
    let mut pos = 0u64;
    loop {
        let want = usize::try_from((limit - pos).min(BLOCK as u64)).unwrap_or(BLOCK);
        let n = read_full(src, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        // Slice equality compiles to memcmp, fast even in debug builds.
        if buf[..n] == zeros[..n] {
            stats.zero_bytes += n as u64;
        } else {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
            stats.data_bytes += n as u64;
        }
        pos += n as u64;
        if n < want || pos == limit {
            break;
        }
    }
    dst.set_len(pos)?;
    Ok(stats)
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn store() -> (tempfile::TempDir, DiskStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(dir.path().join("disks")).expect("open");
        (dir, store)
    }

    #[test]
    fn a_new_disk_is_all_holes() {
        let (_dir, disks) = store();
        disks.create("vol-1", 64 * MIB).expect("create");
        assert_eq!(disks.size("vol-1").expect("size"), 64 * MIB);
        assert!(disks.allocated("vol-1").expect("allocated") < MIB);
        assert_eq!(
            disks.read_at("vol-1", 10 * MIB, 4).expect("read"),
            [0, 0, 0, 0]
        );
        assert!(disks.create("vol-1", MIB).is_err(), "ids are unique");
    }

    #[test]
    fn a_copy_has_the_data_and_keeps_the_holes() {
        let (_dir, disks) = store();
        disks.create("vol", 256 * MIB).expect("create");
        disks.write_at("vol", 0, b"boot sector").expect("write");
        disks
            .write_at("vol", 100 * MIB + 7, &[0xab; 3 * BLOCK])
            .expect("write");
        let stats = disks.copy("vol", "snap").expect("copy");

        assert_eq!(disks.size("snap").expect("size"), 256 * MIB);
        assert_eq!(disks.read_at("snap", 0, 11).expect("read"), b"boot sector");
        assert_eq!(
            disks
                .read_at("snap", 100 * MIB + 7, 3 * BLOCK)
                .expect("read"),
            vec![0xab; 3 * BLOCK]
        );
        // One block for the boot sector, four for the unaligned run.
        assert_eq!(stats.data_bytes, 5 * BLOCK as u64);
        assert_eq!(stats.data_bytes + stats.zero_bytes, 256 * MIB);
        assert!(disks.allocated("snap").expect("allocated") < 2 * MIB);
    }

    #[test]
    fn a_copy_is_independent_of_its_source() {
        let (_dir, disks) = store();
        disks.create("vol", MIB).expect("create");
        disks.write_at("vol", 0, b"before").expect("write");
        disks.copy("vol", "snap").expect("copy");
        disks.write_at("vol", 0, b"after!").expect("write");
        assert_eq!(disks.read_at("snap", 0, 6).expect("read"), b"before");
        assert_eq!(disks.read_at("vol", 0, 6).expect("read"), b"after!");
    }

    #[test]
    fn an_upload_becomes_a_sparse_disk_of_its_length() {
        let (_dir, disks) = store();
        let mut image = vec![0u8; 10 * BLOCK + 5];
        image[3 * BLOCK] = 1;
        image[10 * BLOCK + 4] = 2;
        let stats = disks
            .create_from("img", &mut image.as_slice())
            .expect("upload");
        assert_eq!(disks.size("img").expect("size"), image.len() as u64);
        assert_eq!(stats.data_bytes, BLOCK as u64 + 5);
        assert_eq!(disks.read_at("img", 0, image.len()).expect("read"), image);
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        let (_dir, disks) = store();
        for bad in ["", "..", "../etc", "a/b", "vol 1"] {
            assert!(disks.create(bad, MIB).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn delete_removes_the_file_and_tolerates_a_missing_one() {
        let (_dir, disks) = store();
        disks.create("vol", MIB).expect("create");
        disks.delete("vol").expect("delete");
        assert!(!disks.exists("vol"));
        disks.delete("vol").expect("delete again");
        assert!(disks.copy("vol", "snap").is_err());
        assert!(!disks.exists("snap"), "a failed copy leaves nothing");
    }
}
