//! Every metric name and label, in one place, and the Prometheus exporter.
//! Names follow Prometheus conventions: `provisiond_` prefix, base units, `_total` counters.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use foldhash::HashMap;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod scrape;

/// Provisioning requests by transport, status and reason.
pub const REQUESTS_TOTAL: &str = "provisiond_requests_total";
/// Provisioning requests whose provision key named a profile, by profile and status. NOT_FOUND
/// here means a wrong secret (or a disabled profile): the brute-force signal.
pub const PROFILE_REQUESTS_TOTAL: &str = "provisiond_profile_requests_total";
/// Request duration by transport.
pub const REQUEST_DURATION_SECONDS: &str = "provisiond_request_duration_seconds";
/// Messages per group commit.
pub const SHARD_BATCH_SIZE: &str = "provisiond_shard_batch_size";
/// Messages left in a shard's mailbox after it drained a batch.
pub const SHARD_MAILBOX_DEPTH: &str = "provisiond_shard_mailbox_depth";
/// Times a caller found a shard mailbox full.
pub const SHARD_MAILBOX_FULL_TOTAL: &str = "provisiond_shard_mailbox_full_total";
/// Duration of one batch commit with its WAL sync.
pub const STORE_SYNC_DURATION_SECONDS: &str = "provisiond_store_sync_duration_seconds";
/// CoAP retransmissions recognized by (peer, message id) within the exchange lifetime: answered
/// from the dedup cache, or dropped while the first copy is being decided. Never decided again.
pub const COAP_RETRANSMISSIONS_TOTAL: &str = "provisiond_coap_retransmissions_total";
/// CoAP requests answered 5.03 because `coap.max_in_flight` requests were in flight.
pub const COAP_OVERLOAD_TOTAL: &str = "provisiond_coap_overload_total";
/// CoAP datagrams dropped or answered with a Reset as malformed (RFC 7252 format errors).
pub const COAP_MALFORMED_TOTAL: &str = "provisiond_coap_malformed_total";
/// Answered CoAP exchanges forgotten before their lifetime because the dedup cache was full.
pub const COAP_DEDUP_EVICTIONS_TOTAL: &str = "provisiond_coap_dedup_evictions_total";
/// Open connections by transport (`HTTP`, `MQTT`; CoAP is connectionless). MQTT is counted from
/// TCP accept to close; HTTP is read from the kernel's socket table at scrape time.
pub const OPEN_CONNECTIONS: &str = "provisiond_open_connections";
/// MQTT connections or sessions the server ended, by reason (`connect_timeout`,
/// `not_provisioning`, `topic`).
pub const MQTT_REFUSED_TOTAL: &str = "provisiond_mqtt_refused_total";
/// Bulk-import rows by result (`created`, `updated`, `failed`).
pub const IMPORT_ROWS_TOTAL: &str = "provisiond_import_rows_total";
/// Devices stored, per profile (read from the store's counters at scrape time).
pub const DEVICES_STORED: &str = "provisiond_devices_stored";
/// Devices whose `provisionState` is `provisioned`, per profile.
pub const DEVICES_PROVISIONED: &str = "provisiond_devices_provisioned";
/// Live SST files on disk.
pub const STORE_SST_BYTES: &str = "provisiond_store_sst_bytes";
/// Memtables not yet flushed.
pub const STORE_MEMTABLE_BYTES: &str = "provisiond_store_memtable_bytes";
/// Bytes RocksDB estimates compaction still has to rewrite.
pub const STORE_PENDING_COMPACTION_BYTES: &str = "provisiond_store_pending_compaction_bytes";
/// Free bytes (for unprivileged users) on the data directory's filesystem.
pub const DISK_FREE_BYTES: &str = "provisiond_disk_free_bytes";
/// Size of the data directory's filesystem.
pub const DISK_SIZE_BYTES: &str = "provisiond_disk_size_bytes";
/// Capacity of each shard's mailbox (`engine.mailbox_capacity`), for saturation ratios.
pub const SHARD_MAILBOX_CAPACITY: &str = "provisiond_shard_mailbox_capacity";
/// 1 while RocksDB reports no background error (such as a full disk), else 0.
pub const STORE_HEALTHY: &str = "provisiond_store_healthy";
/// Always 1; the `version` label tells which build runs.
pub const BUILD_INFO: &str = "provisiond_build_info";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    let handle = HANDLE
        .get_or_init(|| {
            // Durations: 100 µs to 2.5 s. Batch sizes: powers of two up to the largest
            // `engine.max_batch` worth running; seconds buckets would put every batch above 2
            // in the last bucket.
            let seconds = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ];
            let batch_sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(&seconds)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full(SHARD_BATCH_SIZE.into()), &batch_sizes)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process")
        })
        .clone();
    UPKEEP.get_or_init(|| start_upkeep(handle.clone()));
    DESCRIBED.get_or_init(describe);
    handle
}

static DESCRIBED: OnceLock<()> = OnceLock::new();
static UPKEEP: OnceLock<()> = OnceLock::new();

/// How often the exporter's histograms are drained into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder keeps every histogram sample (about 8 bytes, one per request) until a scrape or
/// an upkeep drains it into buckets, so a server that nobody scrapes grew without bound. This
/// thread drains them, as `PrometheusBuilder::install` would on a tokio runtime of its own.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms drain only when scraped");
    }
}

/// Registers help texts and units, and starts the counters that alerts take a `rate()` of at 0,
/// so that they exist in the first scrape instead of appearing with their first event.
fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        "Provisioning requests answered, by transport, status and reason."
    );
    describe_counter!(
        PROFILE_REQUESTS_TOTAL,
        "Provisioning requests with a known provision key, by profile and status."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a request's arrival to its answer, by transport."
    );
    describe_histogram!(SHARD_BATCH_SIZE, "Messages decided per group commit.");
    describe_gauge!(
        SHARD_MAILBOX_DEPTH,
        "Messages waiting in a shard's mailbox after its last batch."
    );
    describe_counter!(
        SHARD_MAILBOX_FULL_TOTAL,
        "Times a caller found a shard mailbox full."
    );
    describe_histogram!(
        STORE_SYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one batch commit including its WAL sync."
    );
    describe_counter!(
        COAP_RETRANSMISSIONS_TOTAL,
        "CoAP retransmissions answered from the dedup cache or absorbed."
    );
    describe_counter!(
        COAP_OVERLOAD_TOTAL,
        "CoAP requests answered 5.03 (overload)."
    );
    describe_counter!(COAP_MALFORMED_TOTAL, "Malformed CoAP datagrams.");
    describe_counter!(
        COAP_DEDUP_EVICTIONS_TOTAL,
        "CoAP exchanges forgotten early because the dedup cache was full."
    );
    describe_gauge!(OPEN_CONNECTIONS, "Open connections, by transport.");
    describe_counter!(
        MQTT_REFUSED_TOTAL,
        "MQTT connections or sessions ended by the server, by reason."
    );
    describe_counter!(IMPORT_ROWS_TOTAL, "Bulk-import rows, by result.");
    describe_gauge!(DEVICES_STORED, "Devices stored, per profile.");
    describe_gauge!(
        DEVICES_PROVISIONED,
        "Devices whose provisionState is provisioned, per profile."
    );
    describe_gauge!(STORE_SST_BYTES, Unit::Bytes, "Live SST files on disk.");
    describe_gauge!(
        STORE_MEMTABLE_BYTES,
        Unit::Bytes,
        "Memtables not yet flushed."
    );
    describe_gauge!(
        STORE_PENDING_COMPACTION_BYTES,
        Unit::Bytes,
        "Bytes compaction still has to rewrite (estimate)."
    );
    describe_gauge!(
        STORE_HEALTHY,
        "1 while the store reports no background error, else 0."
    );
    describe_gauge!(
        DISK_FREE_BYTES,
        Unit::Bytes,
        "Free bytes on the data directory's filesystem."
    );
    describe_gauge!(
        DISK_SIZE_BYTES,
        Unit::Bytes,
        "Size of the data directory's filesystem."
    );
    describe_gauge!(
        SHARD_MAILBOX_CAPACITY,
        "Messages each shard's mailbox holds (engine.mailbox_capacity)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build.");
    describe_counter!(
        PROVISION_THROTTLED_TOTAL,
        "Requests answered NOT_FOUND by the brute-force protection, by transport and empty bucket."
    );
    describe_counter!(
        THROTTLE_UNTRACKED_TOTAL,
        "Failed attempts from sources the full throttle table could not track."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    counter!(SHARD_MAILBOX_FULL_TOTAL).absolute(0);
    for name in [
        COAP_RETRANSMISSIONS_TOTAL,
        COAP_OVERLOAD_TOTAL,
        COAP_MALFORMED_TOTAL,
        COAP_DEDUP_EVICTIONS_TOTAL,
    ] {
        counter!(name).absolute(0);
    }
    for reason in ["connect_timeout", "not_provisioning", "topic"] {
        counter!(MQTT_REFUSED_TOTAL, "reason" => reason).absolute(0);
    }
    for transport in ["HTTP", "MQTT", "COAP"] {
        for bucket in ["source", "profile"] {
            counter!(PROVISION_THROTTLED_TOTAL, "transport" => transport, "bucket" => bucket)
                .absolute(0);
        }
    }
    counter!(THROTTLE_UNTRACKED_TOTAL).absolute(0);
    for result in ["created", "updated", "failed"] {
        counter!(IMPORT_ROWS_TOTAL, "result" => result).absolute(0);
    }
    for transport in ["HTTP", "MQTT"] {
        gauge!(OPEN_CONNECTIONS, "transport" => transport).set(0.0);
    }
    scrape::describe();
}

/// Counts one provisioning request and records its duration.
pub fn request(
    transport: &'static str,
    status: &'static str,
    reason: &'static str,
    took: Duration,
) {
    let seconds = took.as_secs_f64();
    HANDLES.with_borrow_mut(|handles| match handles {
        None => {
            request_counter(transport, status, reason).increment(1);
            duration_histogram(transport).record(seconds);
        }
        Some(handles) => {
            handles
                .requests
                .entry((transport, status, reason))
                .or_insert_with(|| request_counter(transport, status, reason))
                .increment(1);
            handles
                .durations
                .entry(transport)
                .or_insert_with(|| duration_histogram(transport))
                .record(seconds);
        }
    });
}

/// Counts one request of a known profile.
pub fn profile_request(profile: &str, status: &'static str) {
    HANDLES.with_borrow_mut(|handles| {
        let Some(handles) = handles else {
            profile_counter(profile, status).increment(1);
            return;
        };
        let by_profile = handles.profiles.entry(status).or_default();
        if let Some(counter) = by_profile.get(profile) {
            counter.increment(1);
            return;
        }
        if by_profile.len() >= MAX_CACHED_PROFILES {
            // Profiles deleted long ago would otherwise stay cached on every thread.
            by_profile.clear();
        }
        let counter = profile_counter(profile, status);
        counter.increment(1);
        by_profile.insert(profile.to_string(), counter);
    });
}

/// The registry's handles behind [`request`] and [`profile_request`], each named in one place.
fn request_counter(transport: &'static str, status: &'static str, reason: &'static str) -> Counter {
    counter!(REQUESTS_TOTAL, "transport" => transport, "status" => status, "reason" => reason)
}

fn duration_histogram(transport: &'static str) -> Histogram {
    histogram!(REQUEST_DURATION_SECONDS, "transport" => transport)
}

fn profile_counter(profile: &str, status: &'static str) -> Counter {
    counter!(PROFILE_REQUESTS_TOTAL, "profile" => profile.to_string(), "status" => status)
}

/// Profiles whose counters one thread keeps at hand, per status.
const MAX_CACHED_PROFILES: usize = 1024;

/// The per-request metrics' handles, by label values, of one thread. Building a metric's key
/// and looking it up in the recorder's registry on every request cost about 2% of an HTTP
/// worker's CPU; a handle is an `Arc` to the same atomic the registry holds, and the recorder
/// never drops it (no idle timeout is configured). The maps hash with foldhash, cheaper than
/// SipHash for these short keys.
#[derive(Default)]
struct Handles {
    requests: HashMap<(&'static str, &'static str, &'static str), Counter>,
    durations: HashMap<&'static str, Histogram>,
    profiles: HashMap<&'static str, HashMap<String, Counter>>,
}

thread_local! {
    /// `None` until the recorder is installed: a handle taken before that would be a no-op for
    /// good.
    static HANDLES: RefCell<Option<Handles>> = RefCell::new(HANDLE.get().map(|_| Handles::default()));
}

/// Records one drained batch of a shard.
pub fn shard_batch(shard: &str, size: usize, depth_after: usize) {
    histogram!(SHARD_BATCH_SIZE).record(size as f64);
    gauge!(SHARD_MAILBOX_DEPTH, "shard" => shard.to_string()).set(depth_after as f64);
}

/// Publishes the configured mailbox capacity.
pub fn shard_mailbox_capacity(capacity: usize) {
    gauge!(SHARD_MAILBOX_CAPACITY).set(capacity as f64);
}

/// Counts a full mailbox met by a caller.
pub fn mailbox_full() {
    counter!(SHARD_MAILBOX_FULL_TOTAL).increment(1);
}

/// Records the duration of one batch commit.
pub fn store_sync(took: Duration) {
    histogram!(STORE_SYNC_DURATION_SECONDS).record(took.as_secs_f64());
}

/// Counts a recognized CoAP retransmission.
pub fn coap_retransmission() {
    counter!(COAP_RETRANSMISSIONS_TOTAL).increment(1);
}

/// Counts a CoAP request refused with 5.03.
pub fn coap_overload() {
    counter!(COAP_OVERLOAD_TOTAL).increment(1);
}

/// Counts a malformed CoAP datagram.
pub fn coap_malformed() {
    counter!(COAP_MALFORMED_TOTAL).increment(1);
}

/// Counts an answered CoAP exchange evicted from the full dedup cache.
pub fn coap_dedup_eviction() {
    counter!(COAP_DEDUP_EVICTIONS_TOTAL).increment(1);
}

/// Counts an accepted MQTT connection.
pub fn mqtt_connection_opened() {
    gauge!(OPEN_CONNECTIONS, "transport" => "MQTT").increment(1.0);
}

/// Counts a closed MQTT connection.
pub fn mqtt_connection_closed() {
    gauge!(OPEN_CONNECTIONS, "transport" => "MQTT").decrement(1.0);
}

/// Counts an MQTT connection or session ended by the server.
pub fn mqtt_refused(reason: &'static str) {
    counter!(MQTT_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts bulk-import rows of one result.
pub fn import_rows(result: &'static str, rows: u64) {
    if rows > 0 {
        counter!(IMPORT_ROWS_TOTAL, "result" => result).increment(rows);
    }
}

// ---- Reliability and security (issue 9): brute-force protection and overload answers. ----

/// Provisioning requests answered NOT_FOUND by the brute-force protection without being
/// checked, by transport and by which bucket was empty (`source`, `profile`).
pub const PROVISION_THROTTLED_TOTAL: &str = "provisiond_provision_throttled_total";
/// Failed attempts whose source could not be tracked because the throttle table was full.
pub const THROTTLE_UNTRACKED_TOTAL: &str = "provisiond_throttle_untracked_total";

/// Counts a request refused by the brute-force protection.
pub fn provision_throttled(transport: &'static str, bucket: &'static str) {
    counter!(PROVISION_THROTTLED_TOTAL, "transport" => transport, "bucket" => bucket).increment(1);
}

/// Counts a failed attempt from a source the full throttle table could not track.
pub fn throttle_untracked() {
    counter!(THROTTLE_UNTRACKED_TOTAL).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installing_the_recorder_starts_one_upkeep_thread() {
        install();
        install();
        let upkeep_threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(Result::ok)
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|name| name.trim() == "metrics-upkeep")
                })
                .count()
        };
        // A new thread names itself once it runs, so its name may show a moment after spawn.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while upkeep_threads() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(upkeep_threads(), 1);
    }
}
