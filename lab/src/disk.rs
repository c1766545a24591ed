//! Simulated disks as real files: each disk, snapshot copy or volume of a
//! simulated site is a raw image in the site's state folder, sparse like a
//! thin-provisioned volume. Copies (snapshots, clones) copy the blocks that
//! hold data and leave holes holes, so a 50 GiB disk with 10 MiB written
//! copies in milliseconds — and its copy really holds the same bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The images of one site, named by id in one folder.
#[derive(Debug, Clone)]
pub struct Disks {
    dir: PathBuf,
}

impl Disks {
    /// Images live in `dir` (created when missing).
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The file of image `id`. Ids are the site's own (`vm-1-disk0`,
    /// `vol-7`), never paths.
    pub fn path(&self, id: &str) -> io::Result<PathBuf> {
        let safe = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !id.starts_with('.');
        if !safe {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{id}' is not a disk id (letters, digits, '-', '_', '.')"),
            ));
        }
        Ok(self.dir.join(format!("{id}.img")))
    }

    /// How many images there are.
    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
                .count()
        })
    }

    pub fn exists(&self, id: &str) -> bool {
        self.path(id).is_ok_and(|p| p.exists())
    }

    /// A new, empty (all-hole) image of `size` bytes.
    pub fn create(&self, id: &str, size: u64) -> io::Result<PathBuf> {
        let path = self.path(id)?;
        File::create(&path)?.set_len(size)?;
        Ok(path)
    }

    /// Image `to` becomes a copy of image `from`.
    pub fn copy(&self, from: &str, to: &str) -> io::Result<PathBuf> {
        let target = self.path(to)?;
        copy_sparse(&self.path(from)?, &target)?;
        Ok(target)
    }

    pub fn size(&self, id: &str) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(id)?)?.len())
    }

    /// Write `data` at `offset` (a guest writing to its disk).
    pub fn write(&self, id: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(id)?)?;
        if offset + data.len() as u64 > file.metadata()?.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write past the end of disk '{id}'"),
            ));
        }
        file.write_all_at(data, offset)
    }

    /// The whole image (for tests of small disks).
    pub fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id)?)
    }

    /// `len` bytes at `offset`; reading past the end is an error.
    pub fn read_at(&self, id: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        File::open(self.path(id)?)?.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Grow (with a hole) or shrink an image, like extending a volume.
    pub fn resize(&self, id: &str, size: u64) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(self.path(id)?)?
            .set_len(size)
    }

    /// A new image holding what `reader` yields (an upload); all-zero
    /// blocks stay holes. Returns its size.
    pub fn create_from(&self, id: &str, reader: &mut impl Read) -> io::Result<u64> {
        const BLOCK: usize = 64 << 10;
        let path = self.path(id)?;
        let target = File::create(&path)?;
        let mut buf = vec![0u8; BLOCK];
        let mut pos = 0u64;
        let written = loop {
            let n = match read_full(reader, &mut buf) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if n == 0 {
                break target.set_len(pos).and_then(|()| target.sync_data());
            }
            if buf[..n].iter().any(|b| *b != 0)
                && let Err(e) = target.write_all_at(&buf[..n], pos)
            {
                break Err(e);
            }
            pos += n as u64;
        };
        if written.is_err() {
            // Half an upload is no image; leave nothing behind.
            let _ = std::fs::remove_file(&path);
        }
        written.map(|()| pos)
    }

    /// Remove an image; one already gone is fine.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Disks {
    /// The byte ranges where images `a` and `b` differ, at `chunk`
    /// granularity, merged and sorted (a platform's changed-block
    /// tracking). Where both are holes nothing is read.
    pub fn changed_ranges(&self, a: &str, b: &str, chunk: u64) -> io::Result<Vec<(u64, u64)>> {
        changed_ranges(&self.path(a)?, &self.path(b)?, chunk)
    }
}

/// The ranges of an image that hold data (not holes), merged and sorted:
/// what a thin volume has allocated (imageio's `zero` extents are the
/// rest).
pub fn data_ranges(path: &Path) -> io::Result<Vec<(u64, u64)>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(start))?.min(len);
        if end > start {
            ranges.push((start, end - start));
        }
        pos = end;
    }
    Ok(ranges)
}

/// The byte ranges where two raw images differ, at `chunk` granularity,
/// merged and sorted; where both are holes nothing is read. Images of
/// different sites (an OpenStack volume and its copy on a KubeVirt PVC)
/// compare the same way.
pub fn changed_ranges(a: &Path, b: &Path, chunk: u64) -> io::Result<Vec<(u64, u64)>> {
    let (fa, fb) = (File::open(a)?, File::open(b)?);
    let len = fa.metadata()?.len();
    if fb.metadata()?.len() != len || chunk == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "'{}' and '{}' differ in size; only copies of one disk compare",
                a.display(),
                b.display()
            ),
        ));
    }
    let next_data = |f: &File, pos: u64| match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(pos))
    {
        Ok(at) => Ok(at),
        Err(rustix::io::Errno::NXIO) => Ok(len),
        Err(e) => Err(io::Error::from(e)),
    };
    let size = usize::try_from(chunk).unwrap_or(usize::MAX);
    let (mut ba, mut bb) = (vec![0u8; size], vec![0u8; size]);
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0;
    while pos < len {
        let next = next_data(&fa, pos)?.min(next_data(&fb, pos)?);
        if next >= len {
            break;
        }
        let start = next / chunk * chunk;
        let end = (start + chunk).min(len);
        let n = usize::try_from(end - start).unwrap_or(size);
        fa.read_exact_at(&mut ba[..n], start)?;
        fb.read_exact_at(&mut bb[..n], start)?;
        if ba[..n] != bb[..n] {
            match out.last_mut() {
                Some(last) if last.0 + last.1 == start => last.1 += end - start,
                _ => out.push((start, end - start)),
            }
        }
        pos = end;
    }
    Ok(out)
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Copy a raw image, reading only its data extents (`SEEK_DATA` /
/// `SEEK_HOLE`); the copy has the same size and holes where the source has.
pub fn copy_sparse(from: &Path, to: &Path) -> io::Result<()> {
    let source = File::open(from)?;
    let len = source.metadata()?.len();
    let target = File::create(to)?;
    target.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let start = match rustix::fs::seek(&source, rustix::fs::SeekFrom::Data(pos)) {
            Ok(start) => start,
            // No data after `pos`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(&source, rustix::fs::SeekFrom::Hole(start))?.min(len);
        let mut at = start;
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            source.read_exact_at(&mut buf[..n], at)?;
            // Zeros inside a data extent need not be written: the target
            // reads them as zeros already.
            if buf[..n].iter().any(|b| *b != 0) {
                target.write_all_at(&buf[..n], at)?;
            }
            at += n as u64;
        }
        pos = end;
    }
    target.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_the_same_bytes_and_keeps_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks = Disks::open(dir.path()).expect("open");
        let size = 256 << 20;
        disks.create("a", size).expect("create");
        disks.write("a", 4096, b"boot sector").expect("write");
        disks.write("a", 200 << 20, &[7u8; 65536]).expect("write");
        disks.copy("a", "b").expect("copy");
        assert_eq!(disks.size("b").expect("size"), size);
        assert_eq!(disks.read("a").expect("a"), disks.read("b").expect("b"));
        // Sparse: far less allocated than the apparent size.
        let allocated = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(disks.path("b").expect("path"))
                .expect("meta")
                .blocks()
                * 512
        };
        assert!(allocated < 4 << 20, "copy allocated {allocated} bytes");
        // Independent copies.
        disks.write("b", 0, b"changed").expect("write");
        assert_ne!(disks.read("a").expect("a"), disks.read("b").expect("b"));
    }

    #[test]
    fn changed_ranges_are_where_two_copies_differ() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks = Disks::open(dir.path()).expect("open");
        disks.create("a", 8 << 20).expect("create");
        disks.write("a", 0, &[1u8; 1000]).expect("write");
        disks.copy("a", "b").expect("copy");
        assert_eq!(disks.changed_ranges("a", "b", 65_536).expect("same"), []);
        disks.write("b", 70_000, b"x").expect("write");
        disks.write("b", 131_072, b"y").expect("write");
        disks.write("b", 5 << 20, b"z").expect("write");
        assert_eq!(
            disks.changed_ranges("a", "b", 65_536).expect("diff"),
            [(65_536, 131_072), (5 << 20, 65_536)]
        );
    }

    #[test]
    fn an_upload_becomes_a_sparse_image_of_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks = Disks::open(dir.path()).expect("open");
        let mut image = vec![0u8; 10 << 20];
        image[3 << 20] = 1;
        image.extend_from_slice(b"tail");
        let size = disks
            .create_from("img", &mut image.as_slice())
            .expect("upload");
        assert_eq!(size, image.len() as u64);
        assert_eq!(disks.read("img").expect("read"), image);
        assert_eq!(disks.read_at("img", 3 << 20, 1).expect("read_at"), [1]);
        let allocated = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(disks.path("img").expect("path"))
                .expect("meta")
                .blocks()
                * 512
        };
        assert!(allocated < 1 << 20, "upload allocated {allocated} bytes");
        disks.resize("img", 20 << 20).expect("resize");
        assert_eq!(disks.size("img").expect("size"), 20 << 20);
        assert_eq!(disks.read_at("img", 15 << 20, 2).expect("hole"), [0, 0]);
    }

    #[test]
    fn ids_are_not_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks = Disks::open(dir.path()).expect("open");
        for bad in ["../etc/passwd", "a/b", "", ".hidden"] {
            let err = disks.create(bad, 1).expect_err(bad);
            assert!(err.to_string().contains("is not a disk id"), "{err}");
        }
        assert!(disks.write("x", 0, b"1").is_err());
        disks.create("x", 4).expect("create");
        let err = disks.write("x", 2, b"123").expect_err("past the end");
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
