//! What a plugin call costs. Run with `cargo xtask bench`.
//!
//! The figure of interest is `fresh_instance`: a new store and instance of
//! the example plugin from its cached `InstancePre` (pooling allocator), one
//! call of its small `describe` export, and teardown, which is what every
//! provider call pays. Beside it, `fresh_instance_contract_0_1` is the same
//! call of the example plugin built against the contract 0.1, through the
//! host's 0.1 binding; and three baselines run in the same process:
//!
//! - `warm_instance`: the same export on an instance kept alive (what
//!   isolation per call adds is the difference);
//! - `native`: the same Rust function compiled into the host;
//! - `out_of_process`: the same function in a separate process answering over
//!   a Unix socket with a length-prefixed JSON reply — the model of
//!   Terraform's and Velero's plugins (go-plugin over gRPC, minus protobuf).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use rebound_runtime::{CallContext, Describe, PluginPackage, Runtime, RuntimeConfig, TrustPolicy};

const OOP_ENV: &str = "REBOUND_BENCH_OOP_SOCKET";

fn describe_json() -> Vec<u8> {
    let info = rebound_plugin_example::describe_info();
    serde_json::to_vec(&serde_json::json!({
        "name": info.name,
        "version": info.version,
        "platform": info.platform,
        "capabilities": info.capabilities.bits(),
        "snapshot_granularity_secs": info.snapshot_granularity_secs,
    }))
    .expect("json")
}

/// The out-of-process plugin: answer one request per line with a
/// length-prefixed JSON reply, until the client hangs up.
fn serve_out_of_process(path: &str) {
    let listener = UnixListener::bind(path).expect("bind unix socket");
    let (mut conn, _) = listener.accept().expect("accept");
    let mut request = [0u8; 1];
    while conn.read_exact(&mut request).is_ok() {
        let body = describe_json();
        let len = u32::try_from(body.len())
            .expect("small reply")
            .to_be_bytes();
        if conn
            .write_all(&len)
            .and_then(|()| conn.write_all(&body))
            .is_err()
        {
            break;
        }
    }
}

struct OutOfProcess {
    child: Child,
    conn: UnixStream,
}

impl OutOfProcess {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rebound-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("plugin.sock");
        let _ = std::fs::remove_file(&path);
        let child = Command::new(std::env::current_exe().expect("exe"))
            .env(OOP_ENV, &path)
            .spawn()
            .expect("spawn out-of-process plugin");
        let conn = loop {
            match UnixStream::connect(&path) {
                Ok(c) => break c,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        Self { child, conn }
    }

    fn call(&mut self) -> serde_json::Value {
        self.conn.write_all(b"d").expect("send");
        let mut len = [0u8; 4];
        self.conn.read_exact(&mut len).expect("len");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.conn.read_exact(&mut body).expect("body");
        serde_json::from_slice(&body).expect("reply")
    }
}

impl Drop for OutOfProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plugin_dir() -> PathBuf {
    std::env::var_os("REBOUND_PLUGIN_DIR")
        .map(PathBuf::from)
        .expect("REBOUND_PLUGIN_DIR is set by `cargo xtask bench`")
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let package = |name: &str| {
        let dir = plugin_dir().join(name);
        PluginPackage::build(
            &std::fs::read_to_string(dir.join("plugin.toml")).expect("plugin.toml"),
            std::fs::read(dir.join("plugin.wasm")).expect("plugin.wasm"),
            None,
        )
        .expect("package")
    };
    let runtime = Runtime::new(RuntimeConfig {
        trust: TrustPolicy {
            trusted_keys: Vec::new(),
            allow_unsigned: true,
        },
        cache_dir: Some(plugin_dir().join("../wasmtime-cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let plugin = tokio
        .block_on(runtime.load(&package("example")))
        .expect("load example plugin");
    // The same plugin built against the contract 0.1, called through the
    // host's 0.1 binding (loaded, not installed: it has the same name).
    let plugin_0_1 = tokio
        .block_on(runtime.load(&package("example-contract-0-1")))
        .expect("load the 0.1 build of the example plugin");
    let ctx = CallContext::none(Duration::from_secs(5));

    let mut group = c.benchmark_group("plugin_call");
    group.bench_function("fresh_instance", |b| {
        b.to_async(&tokio)
            .iter(|| async { runtime.call(&plugin, &ctx, Describe).await.expect("call") });
    });
    group.bench_function("fresh_instance_contract_0_1", |b| {
        b.to_async(&tokio).iter(|| async {
            runtime
                .call(&plugin_0_1, &ctx, Describe)
                .await
                .expect("call")
        });
    });
    let mut warm = tokio.block_on(runtime.warm(&plugin, &ctx)).expect("warm");
    group.bench_function("warm_instance", |b| {
        b.iter(|| {
            tokio
                .block_on(warm.call(Describe))
                .expect("call")
                .expect("describe")
        });
    });
    group.bench_function("native", |b| {
        b.iter(|| std::hint::black_box(rebound_plugin_example::describe_info()));
    });
    let mut oop = OutOfProcess::start();
    group.bench_function("out_of_process", |b| b.iter(|| oop.call()));
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(path) = std::env::var(OOP_ENV) {
        serve_out_of_process(&path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
