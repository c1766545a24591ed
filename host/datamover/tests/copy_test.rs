//! The data mover between two real mover agents on loopback, over real
//! sparse files: seeding a 4 GiB sparse disk, a 1% delta resync, resuming an
//! interrupted copy, and refusing a corrupted target; endpoints without
//! block digests hashed by the mover, skipping the zero extents an
//! imageio-like endpoint lists.

use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::RngCore;
use rebound_datamover::agent::{self, AgentConfig};
use rebound_datamover::{
    Checkpoint, CopyOptions, Endpoint, FileCheckpoint, MemoryCheckpoint, Mode, MoveError, copy,
    verify_endpoints,
};

const GIB: u64 = 1 << 30;
const BLOCK: u64 = 4 << 20;

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path)
        .expect("create")
        .set_len(size)
        .expect("set_len");
}

/// Fill `blocks` with fresh random data.
fn scribble(path: &Path, blocks: &[u64]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    let mut data = vec![0u8; BLOCK as usize];
    for b in blocks {
        rand::thread_rng().fill_bytes(&mut data);
        file.write_all_at(&data, b * BLOCK).expect("write");
    }
}

/// Every 100th block: 1% of the disk, spread across it.
fn one_percent(size: u64, phase: u64) -> Vec<u64> {
    (0..size / BLOCK).filter(|b| b % 100 == phase).collect()
}

async fn agent(path: &Path, token: &str, writable: bool) -> Endpoint {
    let addr = agent::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        AgentConfig {
            path: path.to_owned(),
            token: token.to_owned(),
            writable,
        },
    )
    .await
    .expect("agent");
    let size = std::fs::metadata(path).expect("meta").len();
    Endpoint::agent(format!("http://{addr}/disk"), token, size)
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("meta").blocks() * 512
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_disk_is_seeded_then_resynced_moving_only_the_changed_blocks() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("src.raw"), dir.path().join("dst.raw"));
    let size = 4 * GIB;
    sparse(&src, size);
    sparse(&dst, size);
    scribble(&src, &one_percent(size, 0));
    let source = agent(&src, "src-token", false).await;
    let target = agent(&dst, "dst-token", true).await;

    let seeded = copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("seed");
    assert_eq!(seeded.mode, "delta by block digests");
    assert_eq!(seeded.blocks_copied, one_percent(size, 0).len() as u64);
    assert!(
        allocated(&dst) < 64 * BLOCK,
        "the target stays sparse: {} bytes allocated",
        allocated(&dst)
    );

    // 1% of the blocks change; the resync moves those and nothing else.
    let changed = one_percent(size, 37);
    scribble(&src, &changed);
    let changed_bytes = changed.len() as u64 * BLOCK;
    let resync = copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("resync");
    assert!(
        resync.bytes_written as f64 <= 1.05 * changed_bytes as f64,
        "moved {} bytes for {changed_bytes} changed",
        resync.bytes_written
    );
    assert_eq!(resync.blocks_copied, changed.len() as u64);
    assert_eq!(
        resync.disk_digest,
        verify_endpoints(&source, &target, BLOCK)
            .await
            .expect("verified")
    );

    // The same resync driven by a platform's changed-block listing.
    let again = one_percent(size, 71);
    scribble(&src, &again);
    let ranges: Vec<(u64, u64)> = again.iter().map(|b| (b * BLOCK + 4096, 8192)).collect();
    let listed = copy(
        &source,
        &target,
        CopyOptions {
            mode: Mode::Changed(ranges),
            ..CopyOptions::default()
        },
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("resync from changed blocks");
    assert_eq!(listed.mode, "delta by changed ranges");
    assert_eq!(listed.bytes_written, again.len() as u64 * BLOCK);
}

/// Endpoints that list no block digests (imageio's, say): the mover hashes
/// the target by reading it and writes only the blocks that differ; a
/// source's blocks are hashed as they are read for the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_without_digests_are_hashed_and_only_changed_blocks_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("src.raw"), dir.path().join("dst.raw"));
    let size = 64 * BLOCK;
    sparse(&src, size);
    sparse(&dst, size);
    scribble(&src, &(0..64).filter(|b| b % 4 == 0).collect::<Vec<_>>());
    let source = agent(&src, "src-token", false).await;
    let plain = |e: &Endpoint| Endpoint {
        block_digests: false,
        ..e.clone()
    };
    let target = plain(&agent(&dst, "dst-token", true).await);
    let seeded = copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("seed");
    assert_eq!(
        seeded.mode,
        "delta by block digests (the target's hashed by the mover)"
    );
    assert_eq!((seeded.blocks_copied, seeded.bytes_hashed), (16, size));
    assert_eq!(seeded.bytes_written, 16 * BLOCK, "holes are not written");

    let changed = [5, 17, 40];
    scribble(&src, &changed);
    let resync = copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("resync");
    assert_eq!(resync.bytes_written, 3 * BLOCK);
    assert_eq!(
        resync.disk_digest,
        verify_endpoints(
            &source,
            &Endpoint {
                block_digests: true,
                ..target.clone()
            },
            BLOCK
        )
        .await
        .expect("equal"),
        "the whole-disk digest is the disk's"
    );

    // The source lists none either: each block is hashed as it is read,
    // and written only where the target's differs.
    scribble(&src, &[63]);
    let both = copy(
        &plain(&source),
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("both hashed");
    assert_eq!(
        both.mode,
        "delta by block digests (both sides' hashed by the mover)"
    );
    assert_eq!(
        (both.blocks_copied, both.bytes_written, both.bytes_read),
        (1, BLOCK, size)
    );
    assert_eq!(both.disk_digest, {
        let again = copy(
            &source,
            &target,
            CopyOptions::default(),
            &mut MemoryCheckpoint::default(),
        )
        .await
        .expect("nothing left");
        assert_eq!(again.bytes_written, 0);
        again.disk_digest
    });
}

/// Stops the copy (by failing) after a number of blocks, like a crash.
struct CrashAfter {
    inner: FileCheckpoint,
    left: usize,
}

impl Checkpoint for CrashAfter {
    fn completed(&self) -> std::collections::BTreeSet<u64> {
        self.inner.completed()
    }

    fn complete(&mut self, block: u64) -> std::io::Result<()> {
        if self.left == 0 {
            return Err(std::io::Error::other("simulated crash"));
        }
        self.left -= 1;
        self.inner.complete(block)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("src.raw"), dir.path().join("dst.raw"));
    let size = 64 * BLOCK;
    sparse(&src, size);
    sparse(&dst, size);
    scribble(&src, &(0..64).collect::<Vec<_>>());
    let source = agent(&src, "a", false).await;
    let target = agent(&dst, "b", true).await;
    let journal = dir.path().join("copy.checkpoint");

    let mut crashing = CrashAfter {
        inner: FileCheckpoint::open(&journal).expect("checkpoint"),
        left: 20,
    };
    let err = copy(&source, &target, CopyOptions::default(), &mut crashing)
        .await
        .expect_err("crashes");
    assert!(matches!(err, MoveError::Checkpoint(_)), "{err}");

    // A new process opens the same checkpoint and finishes the job.
    let mut reopened = FileCheckpoint::open(&journal).expect("reopen");
    assert_eq!(reopened.completed().len(), 20);
    let report = copy(&source, &target, CopyOptions::default(), &mut reopened)
        .await
        .expect("resumed");
    assert_eq!(
        report.blocks_resumed, 0,
        "digests already show the copied blocks equal"
    );
    // Up to `workers` blocks were written but not yet recorded at the crash;
    // their digests show them equal, so they do not move again either.
    let workers = CopyOptions::default().workers as u64;
    assert!(
        (44 - workers..=44).contains(&report.blocks_copied),
        "only the blocks not yet copied move: {}",
        report.blocks_copied
    );

    // In full mode the checkpoint is what skips the finished blocks.
    sparse(&dst, 0);
    sparse(&dst, size);
    let journal = dir.path().join("full.checkpoint");
    let full = CopyOptions {
        mode: Mode::Full,
        ..CopyOptions::default()
    };
    let mut crashing = CrashAfter {
        inner: FileCheckpoint::open(&journal).expect("checkpoint"),
        left: 10,
    };
    copy(&source, &target, full.clone(), &mut crashing)
        .await
        .expect_err("crashes");
    let report = copy(
        &source,
        &target,
        full,
        &mut FileCheckpoint::open(&journal).expect("reopen"),
    )
    .await
    .expect("resumed");
    assert_eq!(
        (report.blocks_resumed, report.blocks_copied),
        (10, 54),
        "the checkpoint skips the finished blocks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_block_is_caught_before_cutover() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("src.raw"), dir.path().join("dst.raw"));
    let size = 16 * BLOCK;
    sparse(&src, size);
    sparse(&dst, size);
    scribble(&src, &(0..16).collect::<Vec<_>>());
    let source = agent(&src, "a", false).await;
    let target = agent(&dst, "b", true).await;
    copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("copy");

    // Bit rot on the target after the copy: one byte's bits flipped (a
    // fixed value would change nothing where the random data already held
    // it, one time in 256).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dst)
        .expect("open");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 7 * BLOCK + 123)
        .expect("read");
    file.write_all_at(&[!byte[0]], 7 * BLOCK + 123)
        .expect("corrupt");
    let err = verify_endpoints(&source, &target, BLOCK)
        .await
        .expect_err("caught");
    match &err {
        MoveError::Corrupt { block, offset, .. } => assert_eq!((*block, *offset), (7, 7 * BLOCK)),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("must not be cut over"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_refuse_bad_tokens_ranges_and_writes_to_exports() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("disk.raw");
    sparse(&path, 8 * BLOCK);
    let export = agent(&path, "right", false).await;
    let http = reqwest::Client::new();

    let wrong = http
        .get(&export.url)
        .header("range", "bytes=0-9")
        .bearer_auth("wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let past = http
        .get(&export.url)
        .header("range", format!("bytes={}-{}", 8 * BLOCK, 8 * BLOCK + 9))
        .bearer_auth("right")
        .send()
        .await
        .expect("send");
    assert_eq!(past.status(), 416);
    let put = http
        .put(&export.url)
        .header("content-range", format!("bytes 0-3/{}", 8 * BLOCK))
        .bearer_auth("right")
        .body(vec![1u8, 2, 3, 4])
        .send()
        .await
        .expect("send");
    assert_eq!(put.status(), 405, "an export accepts no writes");

    // A write whose body is not the size its range names is refused
    // whole: none of it reaches the disk.
    let import_path = dir.path().join("import.raw");
    sparse(&import_path, 8 * BLOCK);
    let import = agent(&import_path, "right", true).await;
    let says = [
        "the body holds 3 bytes, not the 4 expected (bytes 0-3/",
        "the body holds more than the 4 bytes expected (bytes 0-3/",
    ];
    for (body, says) in [(vec![7u8; 3], says[0]), (vec![7u8; 5], says[1])] {
        let put = http
            .put(&import.url)
            .header("content-range", format!("bytes 0-3/{}", 8 * BLOCK))
            .bearer_auth("right")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(put.status(), 400);
        let text = put.text().await.expect("text");
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(std::fs::read(&import_path).expect("read")[..8], [0u8; 8]);
    assert_eq!(allocated(&import_path), 0, "nothing was written");

    let mut bad = export.clone();
    bad.headers = vec![("authorization".into(), "Bearer nope".into())];
    let target_path = dir.path().join("t.raw");
    sparse(&target_path, 8 * BLOCK);
    let target = agent(&target_path, "t", true).await;
    let err = copy(
        &bad,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect_err("unauthorized");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "tokens never appear in errors: {err}"
    );

    let mut small = target.clone();
    small.size = BLOCK;
    let err = copy(
        &export,
        &small,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect_err("size");
    assert!(matches!(err, MoveError::SizeMismatch { .. }), "{err}");
}

/// An agent behind a front that answers as ovirt-imageio does where the
/// mover asks for zero extents: `OPTIONS` names the `extents` feature, and
/// `GET /disk/extents?context=zero` lists the image's extents, each block
/// of all zeros a zero extent (read from the file when asked). Its
/// endpoint lists no block digests, as imageio's do not.
async fn imageio_like(path: &Path, token: &str, writable: bool) -> Endpoint {
    use axum::http::Method;
    use axum::response::IntoResponse;
    let image = path.to_owned();
    let extents = move || {
        let image = image.clone();
        async move {
            let data = std::fs::read(&image).expect("image");
            let list: Vec<serde_json::Value> = data
                .chunks(BLOCK as usize)
                .enumerate()
                .map(|(i, block)| {
                    serde_json::json!({"start": i as u64 * BLOCK, "length": block.len(),
                        "zero": block.iter().all(|b| *b == 0)})
                })
                .collect();
            axum::Json(list)
        }
    };
    let app = agent::router(AgentConfig {
        path: path.to_owned(),
        token: token.to_owned(),
        writable,
    })
    .expect("agent")
    .route("/disk/extents", axum::routing::get(extents))
    .layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.method() == Method::OPTIONS {
                return axum::Json(serde_json::json!({"features": ["extents", "zero"]}))
                    .into_response();
            }
            next.run(request).await
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let size = std::fs::metadata(path).expect("meta").len();
    Endpoint {
        block_digests: false,
        ..Endpoint::agent(format!("http://{addr}/disk"), token, size)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_extents_an_endpoint_lists_are_neither_read_nor_hashed() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = 16 * BLOCK;
    sparse(&src, size);
    scribble(&src, &[1, 7]);
    // The target: the source's data, then block 7 changed and block 3
    // written where the source holds zeros.
    std::fs::copy(&src, &dst).expect("copy");
    scribble(&dst, &[3, 7]);
    let source = imageio_like(&src, "s", false).await;
    let target = imageio_like(&dst, "t", true).await;
    let report = copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("copy");
    // Only the target's three data blocks are read to hash it, only the
    // source's two are read to copy it; block 7 and the zeros of block 3
    // are written.
    assert_eq!(report.bytes_hashed, 3 * BLOCK, "{report:?}");
    assert_eq!(report.bytes_read, 2 * BLOCK, "{report:?}");
    assert_eq!(report.bytes_written, 2 * BLOCK, "{report:?}");
    assert_eq!(
        std::fs::read(&src).expect("src"),
        std::fs::read(&dst).expect("dst"),
        "the target is the source, block for block"
    );
    // Once equal, a resync reads only the data blocks and writes nothing.
    let again = copy(
        &source,
        &target,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("resync");
    assert_eq!(
        (again.bytes_hashed, again.bytes_read, again.bytes_written),
        (2 * BLOCK, 2 * BLOCK, 0),
        "{again:?}"
    );
}

/// A block is sent with its length (`Content-Length`), not chunked: an
/// import endpoint such as ovirt-imageio wants the size of a write before
/// its body. Seen by a bare listener standing in for the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_written_with_its_length_not_chunked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 64 << 10];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "the request ended before its head");
            request.extend_from_slice(&buf[..n]);
        }
        let end = request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
        let mut body = request[end..].len();
        while body < 1000 {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "the body ended early");
            body += n;
        }
        tcp.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .expect("answer");
        (head, body)
    });
    let endpoint = Endpoint::agent(format!("http://{addr}/disk"), "t", 4096);
    rebound_datamover::write_range(&endpoint, 0, vec![7u8; 1000])
        .await
        .expect("written");
    let (head, body) = seen.await.expect("listener");
    assert!(head.contains("content-length: 1000\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        head.contains("content-range: bytes 0-999/4096\r\n"),
        "{head}"
    );
    assert_eq!(body, 1000);
}
