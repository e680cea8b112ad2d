//! The durable path on a temporary RocksDB, each beside its baseline in the same run:
//! group commit (1024 device writes, one synced WAL write) vs one synced write per request, and
//! the whole engine in-process (1024 concurrent new-device requests through the shards and the
//! store, durable) vs the same with the WAL not synced.
//!
//! `cargo bench --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use provisiond::engine::provision::{Request, RequestedCredentials, Secret, Transport};
use provisiond::engine::{Engine, EngineOptions};
use provisiond::store::record::{Credentials, DeviceRecord};
use provisiond::store::{Store, StoreOptions};

const BATCH: u64 = 1024;

fn device(i: u64) -> DeviceRecord {
    DeviceRecord {
        provisioned: true,
        credentials: Some(Credentials::AccessToken {
            token: format!("token-{i:014}"),
        }),
        provisioned_at_ms: Some(2),
        ..DeviceRecord::new(format!("sensor-{i:012}"), "fleet", "fleet", 1)
    }
}

fn open(dir: &tempfile::TempDir, sync_writes: bool) -> Arc<Store> {
    let options = StoreOptions {
        sync_writes,
        ..StoreOptions::default()
    };
    Arc::new(Store::open(&dir.path().join("db"), &options).expect("store opens"))
}

fn stage(store: &Store, batch: &mut provisiond::store::StoreBatch, i: u64) {
    let d = device(i);
    store.stage_device(batch, &d, None);
    if let Some(Credentials::AccessToken { token }) = &d.credentials {
        store.stage_credentials(batch, token, &d.name);
    }
}

fn bench_group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("one_synced_write_per_1024_requests", |b| {
        b.iter(|| {
            let mut batch = store.batch();
            for _ in 0..BATCH {
                stage(&store, &mut batch, next.fetch_add(1, Ordering::Relaxed));
            }
            store.commit(batch).unwrap();
        })
    });
    group.bench_function("baseline_one_synced_write_per_request", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let mut batch = store.batch();
                stage(&store, &mut batch, next.fetch_add(1, Ordering::Relaxed));
                store.commit(batch).unwrap();
            }
        })
    });
    group.finish();
}

fn engine(dir: &tempfile::TempDir, sync_writes: bool) -> (Engine, String, String) {
    let engine = Engine::spawn(
        open(dir, sync_writes),
        EngineOptions {
            shards: 2,
            mailbox_capacity: 4096,
            max_batch: 1024,
            enqueue_timeout: Duration::from_secs(10),
            // Brute-force protection acts in the transports, before the engine.
            throttle: provisiond::engine::throttle::ThrottleOptions::disabled(),
        },
    )
    .unwrap();
    let reply = provisiond::admin::create_profile(&engine, br#"{"name":"fleet"}"#);
    assert_eq!(reply.status, 201);
    let field = |k: &str| reply.body[k].as_str().unwrap().to_string();
    (
        engine,
        field("provisionDeviceKey"),
        field("provisionDeviceSecret"),
    )
}

fn bench_engine(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (what, sync) in [("durable", true), ("baseline_wal_not_synced", false)] {
        let dir = tempfile::tempdir().unwrap();
        let (engine, key, secret) = engine(&dir, sync);
        let next = AtomicU64::new(0);
        group.bench_function(format!("new_devices_{what}"), |b| {
            b.iter_batched(
                || {
                    (0..BATCH)
                        .map(|_| {
                            Box::new(Request {
                                provision_key: key.clone(),
                                provision_secret: Secret(secret.clone()),
                                device_name: Some(format!(
                                    "sensor-{:012}",
                                    next.fetch_add(1, Ordering::Relaxed)
                                )),
                                credentials: RequestedCredentials::None,
                                gateway: false,
                                transport: Transport::Http,
                            })
                        })
                        .collect::<Vec<_>>()
                },
                |requests| {
                    runtime.block_on(async {
                        let mut set = tokio::task::JoinSet::new();
                        for r in requests {
                            let e = engine.clone();
                            set.spawn(async move { e.provision(r).await.result.is_ok() });
                        }
                        while let Some(ok) = set.join_next().await {
                            assert!(ok.unwrap());
                        }
                    })
                },
                BatchSize::LargeInput,
            )
        });
        engine.shutdown();
    }
    group.finish();
}

criterion_group!(benches, bench_group_commit, bench_engine);
criterion_main!(benches);
