//! Gauges read at scrape time rather than updated on every event: per-profile device counts and
//! store sizes (a few RocksDB property and point reads), process metrics, and open HTTP
//! connections (ntex's HTTP server has no per-connection hook, so the kernel's socket table is
//! read instead). Each scrape costs O(profiles + open sockets), independent of the fleet size.

use std::sync::OnceLock;

use metrics::gauge;

use super::{
    DEVICES_PROVISIONED, DEVICES_STORED, DISK_FREE_BYTES, DISK_SIZE_BYTES, OPEN_CONNECTIONS,
    STORE_HEALTHY, STORE_MEMTABLE_BYTES, STORE_PENDING_COMPACTION_BYTES, STORE_SST_BYTES,
};
use crate::store::Store;

static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

fn process() -> &'static metrics_process::Collector {
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Registers the process metrics' help texts.
pub(super) fn describe() {
    process().describe();
}

/// Refreshes every scrape-time gauge; call right before rendering `/metrics`.
pub fn refresh(store: &Store, http_port: u16) {
    match store.profile_counts() {
        Ok(counts) => {
            for (profile, counts) in counts {
                gauge!(DEVICES_STORED, "profile" => profile.clone()).set(counts.stored as f64);
                gauge!(DEVICES_PROVISIONED, "profile" => profile).set(counts.provisioned as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the per-profile device counters"),
    }
    let sizes = store.sizes();
    gauge!(STORE_SST_BYTES).set(sizes.sst_bytes as f64);
    gauge!(STORE_MEMTABLE_BYTES).set(sizes.memtable_bytes as f64);
    gauge!(STORE_PENDING_COMPACTION_BYTES).set(sizes.pending_compaction_bytes as f64);
    gauge!(STORE_HEALTHY).set(if store.check_health() { 1.0 } else { 0.0 });
    match store.disk_space() {
        Ok(space) => {
            gauge!(DISK_FREE_BYTES).set(space.free_bytes as f64);
            gauge!(DISK_SIZE_BYTES).set(space.size_bytes as f64);
        }
        Err(error) => tracing::warn!(%error, "cannot read the data directory's filesystem size"),
    }
    if let Some(open) = established_on_port(http_port) {
        gauge!(OPEN_CONNECTIONS, "transport" => "HTTP").set(open as f64);
    }
    process().collect();
}

/// Established TCP connections whose local port is `port`, from `/proc/net/tcp` and `tcp6`;
/// `None` where those files do not exist (not Linux).
fn established_on_port(port: u16) -> Option<usize> {
    let mut found = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            *found.get_or_insert(0) += count_established(&text, port);
        }
    }
    found
}

/// Counts the rows of a `/proc/net/tcp` table in state ESTABLISHED (01) with local port `port`.
/// A row reads `sl local_address rem_address st ...`, addresses as `HEXIP:HEXPORT`.
fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local_port = fields
                .next()
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            let state = fields.nth(1);
            local_port == Some(port) && state == Some("01")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_established_rows_on_the_local_port() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:1F90 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 4 1
";
        // Port 0x1F90 = 8080: the listener (0A), the client side (local port D431) and a
        // TIME_WAIT row (06) are not counted.
        assert_eq!(count_established(table, 8080), 1);
        assert_eq!(count_established(table, 1883), 0);
    }

    #[test]
    fn a_real_loopback_connection_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        if let Some(open) = established_on_port(port) {
            assert_eq!(open, 1);
        }
    }
}
