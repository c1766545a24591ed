//! Data mover throughput and delta efficiency. Run with `cargo xtask bench`.
//!
//! - `full_copy`: a 256 MiB disk of random data copied in full through two
//!   mover agents on loopback (read, write, and verification by digests);
//! - `full_copy_tls`: the same through two agents behind HTTPS with a CA of
//!   their own, which the endpoints name (`Endpoint::ca_pem`), as a
//!   platform's export servers and imageio are;
//! - `resync_target_hashed`: a resync of that copy onto a target that lists
//!   no block digests (oVirt's imageio): the mover reads and hashes all of
//!   it, and writes nothing;
//! - `agent_digests`: one agent listing the digests of every block of
//!   that disk (what a verification waits on), beside `one_thread_digests`,
//!   the same blocks read and hashed by the same SHA-256 code on one thread;
//! - `plain_cp`: the same file copied by `cp`, the baseline;
//! - after the timed runs, a 1% delta resync prints bytes moved / bytes
//!   changed.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use rand::RngCore;
use rebound_datamover::agent::{self, AgentConfig};
use rebound_datamover::{CopyOptions, Endpoint, MemoryCheckpoint, Mode, copy};

const SIZE: u64 = 256 << 20;
const BLOCK: u64 = 4 << 20;

fn random_file(path: &Path) {
    let file = std::fs::File::create(path).expect("create");
    let mut chunk = vec![0u8; BLOCK as usize];
    for b in 0..SIZE / BLOCK {
        rand::thread_rng().fill_bytes(&mut chunk);
        file.write_all_at(&chunk, b * BLOCK).expect("write");
    }
}

async fn agent(path: &Path, writable: bool) -> Endpoint {
    let addr = agent::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        AgentConfig {
            path: path.to_owned(),
            token: "bench".into(),
            writable,
        },
    )
    .await
    .expect("agent");
    Endpoint::agent(format!("http://{addr}/disk"), "bench", SIZE)
}

/// The agent over `path` behind HTTPS, with a certificate for 127.0.0.1
/// from a fresh CA the endpoint trusts.
async fn tls_agent(path: &Path, writable: bool) -> Endpoint {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("leaf")
        .signed_by(&key, &ca)
        .expect("sign");
    let tls =
        agent::tls_config(leaf.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = AgentConfig {
        path: path.to_owned(),
        token: "bench".into(),
        writable,
    };
    tokio::spawn(agent::serve_tls(listener, config, tls));
    Endpoint {
        ca_pem: Some(ca.pem()),
        ..Endpoint::agent(format!("https://{addr}/disk"), "bench", SIZE)
    }
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst, cp_dst) = (
        dir.path().join("src.raw"),
        dir.path().join("dst.raw"),
        dir.path().join("cp.raw"),
    );
    random_file(&src);
    std::fs::File::create(&dst)
        .expect("dst")
        .set_len(SIZE)
        .expect("len");
    let (source, target) =
        tokio.block_on(async { (agent(&src, false).await, agent(&dst, true).await) });

    let mut group = c.benchmark_group("datamover");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Bytes(SIZE));
    let full = CopyOptions {
        mode: Mode::Full,
        ..CopyOptions::default()
    };
    group.bench_function("full_copy", |b| {
        b.iter(|| {
            tokio
                .block_on(copy(
                    &source,
                    &target,
                    full.clone(),
                    &mut MemoryCheckpoint::default(),
                ))
                .expect("copy")
        });
    });
    // The target now equals the source. A resync onto a target that lists
    // no digests (imageio's) reads and hashes all of it and writes nothing.
    let plain_target = Endpoint {
        block_digests: false,
        ..target.clone()
    };
    group.bench_function("resync_target_hashed", |b| {
        b.iter(|| {
            let report = tokio
                .block_on(copy(
                    &source,
                    &plain_target,
                    CopyOptions::default(),
                    &mut MemoryCheckpoint::default(),
                ))
                .expect("resync");
            assert_eq!(report.bytes_written, 0);
        });
    });
    let (tls_source, tls_target) =
        tokio.block_on(async { (tls_agent(&src, false).await, tls_agent(&dst, true).await) });
    group.bench_function("full_copy_tls", |b| {
        b.iter(|| {
            tokio
                .block_on(copy(
                    &tls_source,
                    &tls_target,
                    full.clone(),
                    &mut MemoryCheckpoint::default(),
                ))
                .expect("copy over HTTPS")
        });
    });
    // One side of a verification: the agent hashes every block of its
    // disk, on every core; the baseline hashes them on one.
    let http = reqwest::Client::new();
    group.bench_function("agent_digests", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let listed = http
                    .get(&source.url)
                    .query(&[("digests", BLOCK)])
                    .bearer_auth("bench")
                    .send()
                    .await
                    .expect("digests")
                    .error_for_status()
                    .expect("listed")
                    .bytes()
                    .await
                    .expect("body");
                assert!(listed.len() as u64 > SIZE / BLOCK * 64);
            })
        });
    });
    group.bench_function("one_thread_digests", |b| {
        b.iter(|| {
            use sha2::Digest;
            let file = std::fs::File::open(&src).expect("open");
            let mut buf = vec![0u8; BLOCK as usize];
            let digests: Vec<String> = (0..SIZE / BLOCK)
                .map(|block| {
                    file.read_exact_at(&mut buf, block * BLOCK).expect("read");
                    hex::encode(sha2::Sha256::digest(&buf))
                })
                .collect();
            assert_eq!(digests.len() as u64, SIZE / BLOCK);
        });
    });
    group.bench_function("plain_cp", |b| {
        b.iter(|| {
            let status = std::process::Command::new("cp")
                .arg(&src)
                .arg(&cp_dst)
                .status()
                .expect("cp");
            assert!(status.success());
        });
    });
    group.finish();

    // 1% of the blocks change; a digest-driven resync moves only them.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .expect("open");
    let changed: Vec<u64> = (0..SIZE / BLOCK).filter(|b| b % 100 == 0).collect();
    let mut chunk = vec![0u8; BLOCK as usize];
    for b in &changed {
        rand::thread_rng().fill_bytes(&mut chunk);
        file.write_all_at(&chunk, b * BLOCK).expect("write");
    }
    let report = tokio
        .block_on(copy(
            &source,
            &target,
            CopyOptions::default(),
            &mut MemoryCheckpoint::default(),
        ))
        .expect("delta");
    let changed_bytes = changed.len() as u64 * BLOCK;
    println!(
        "datamover/delta_resync: moved {} bytes for {} changed bytes: ratio {:.3} ({})",
        report.bytes_written,
        changed_bytes,
        report.bytes_written as f64 / changed_bytes as f64,
        report.mode
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
