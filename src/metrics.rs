//! Every metric name and label, in one place, and the Prometheus exporter.
//! Names follow Prometheus conventions: `provisiond_` prefix, base units, `_total` counters.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Provisioning requests by transport, status and reason.
pub const REQUESTS_TOTAL: &str = "provisiond_requests_total";
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
/// Open MQTT connections, plain and TLS, from TCP accept to close.
pub const MQTT_CONNECTIONS: &str = "provisiond_mqtt_connections";
/// MQTT connections or sessions the server ended, by reason (`connect_timeout`,
/// `not_provisioning`, `topic`).
pub const MQTT_REFUSED_TOTAL: &str = "provisiond_mqtt_refused_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process")
        })
        .clone()
}

/// Counts one provisioning request and records its duration.
pub fn request(
    transport: &'static str,
    status: &'static str,
    reason: &'static str,
    took: Duration,
) {
    counter!(REQUESTS_TOTAL, "transport" => transport, "status" => status, "reason" => reason)
        .increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "transport" => transport).record(took.as_secs_f64());
}

/// Records one drained batch of a shard.
pub fn shard_batch(shard: &str, size: usize, depth_after: usize) {
    histogram!(SHARD_BATCH_SIZE).record(size as f64);
    gauge!(SHARD_MAILBOX_DEPTH, "shard" => shard.to_string()).set(depth_after as f64);
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
    gauge!(MQTT_CONNECTIONS).increment(1.0);
}

/// Counts a closed MQTT connection.
pub fn mqtt_connection_closed() {
    gauge!(MQTT_CONNECTIONS).decrement(1.0);
}

/// Counts an MQTT connection or session ended by the server.
pub fn mqtt_refused(reason: &'static str) {
    counter!(MQTT_REFUSED_TOTAL, "reason" => reason).increment(1);
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
