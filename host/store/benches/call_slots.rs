//! What keeping a site's `max_calls` across host replicas costs each
//! plugin call: a slot taken in the store and given back
//! (`Store::take_call_slot`, `Store::give_call_slot`), beside what one host
//! alone pays (a tokio semaphore's permit). Run with `cargo xtask bench`.
//!
//! - `call_slots/local_semaphore`: a permit taken and dropped (the baseline);
//! - `call_slots/sqlite`: a slot taken and given back on an SQLite file;
//! - `call_slots/postgres`: the same on PostgreSQL, where replicas share
//!   the slots (only when `REBOUND_TEST_POSTGRES_URL` names a server).

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rebound_store::Store;

const HOLD: Duration = Duration::from_secs(30);

async fn take_and_give(store: &Store) {
    let slot = store
        .take_call_slot("lab-a", 16, "bench/1", HOLD)
        .await
        .expect("take")
        .expect("a free slot");
    store
        .give_call_slot("lab-a", slot, "bench/1")
        .await
        .expect("give");
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::tempdir().expect("tmp");
    let sqlite = tokio
        .block_on(rebound_store::testing::fresh_sqlite(dir.path()))
        .expect("sqlite");
    let postgres = tokio
        .block_on(rebound_store::testing::fresh_postgres())
        .expect("postgres");
    let mut group = c.benchmark_group("call_slots");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
    group.bench_function("local_semaphore", |b| {
        b.to_async(&tokio).iter(|| async {
            drop(semaphore.clone().acquire_owned().await.expect("permit"));
        });
    });
    group.bench_function("sqlite", |b| {
        b.to_async(&tokio).iter(|| take_and_give(&sqlite));
    });
    if let Some(postgres) = &postgres {
        group.bench_function("postgres", |b| {
            b.to_async(&tokio).iter(|| take_and_give(postgres));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
