//! The durable store: RocksDB with one column family per kind of record.
//! The only module that imports rocksdb; it knows nothing of transports, JSON or shards.

pub mod keys;
pub mod record;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use std::collections::BTreeMap;

use self::keys::{
    CF_CREDENTIALS, CF_DEVICES, CF_PROFILE_DEVICES, CF_PROFILE_STATS, CF_PROFILES,
    STATS_COUNTED_KEY,
};
use self::record::{CredentialsOwner, DeviceRecord, ProfileRecord, decode, encode};
use self::stats::ProfileCounts;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error(
        "data directory {0} is in use by another process (is a provisiond server running on it?)"
    )]
    Locked(PathBuf),
    /// The data directory could not be created or opened.
    #[error("cannot open data directory {path}: {reason}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A RocksDB read or write failed.
    #[error("storage error: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Buckets of the `credentials` memtable's hash table: 8 MiB of pointers, taken from its write
/// buffer, for the ~500k entries a 64 MiB write buffer holds.
const CREDENTIALS_MEMTABLE_BUCKETS: usize = 1 << 20;

/// Tuning knobs of the store (see `config::StoreConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Sync the WAL on every committed batch. Off only for benchmarks that measure its cost.
    pub sync_writes: bool,
    /// Size of the shared block cache.
    pub block_cache_bytes: usize,
    /// Memory of all memtables together; above it RocksDB flushes the oldest.
    pub memtable_bytes: usize,
    /// Size of the live write-ahead log; above it RocksDB flushes the column families that hold
    /// its oldest file, which bounds the WAL replayed after a crash.
    pub max_wal_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_writes: true,
            block_cache_bytes: 64 << 20,
            memtable_bytes: 256 << 20,
            max_wal_bytes: 512 << 20,
        }
    }
}

/// The opened database.
pub struct Store {
    db: DB,
    path: PathBuf,
    write_options: WriteOptions,
    /// Options of the shards' point reads, made once: `get_pinned_cf` creates and destroys a
    /// default set through the C API on every call (about 270 instructions per read, two
    /// reads per request).
    point_read: ReadOptions,
    /// Whether writes currently succeed; see [`WriteHealth`].
    health: WriteHealth,
}

/// What the store knows about its own writability. A failed commit (a full disk, a file system
/// turned read-only) puts RocksDB into a background-error state that refuses every write;
/// RocksDB's SstFileManager polls the free space every 5 s and resumes the database by itself
/// once there is room. The next successful write (a batch, or [`Store::check_health`]'s probe)
/// marks the store writable again, in process, with no restart.
#[derive(Debug)]
struct WriteHealth {
    writable: AtomicBool,
    /// When the current unwritable spell began, in ms since `epoch` (meaningless while writable).
    unwritable_since_ms: AtomicU64,
    /// RocksDB's cumulative background-error count as of the last successful write: a higher
    /// count means an error since, which a probe write must clear before the store is healthy.
    errors_acknowledged: AtomicU64,
    epoch: Instant,
}

impl WriteHealth {
    fn new(errors: u64) -> WriteHealth {
        WriteHealth {
            writable: AtomicBool::new(true),
            unwritable_since_ms: AtomicU64::new(0),
            errors_acknowledged: AtomicU64::new(errors),
            epoch: Instant::now(),
        }
    }

    fn failed(&self) {
        if self.writable.load(Ordering::Acquire) {
            let now = self.epoch.elapsed().as_millis() as u64;
            self.unwritable_since_ms.store(now, Ordering::Release);
            self.writable.store(false, Ordering::Release);
        }
    }

    fn succeeded(&self) {
        self.writable.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Writes staged for one atomic commit.
#[derive(Default)]
pub struct StoreBatch {
    batch: WriteBatch,
    /// Counter changes of the staged device writes, written when the batch commits (memtable
    /// inserts were the shards' largest CPU cost, and this saves two per device).
    counts: stats::CountDeltas,
}

impl std::fmt::Debug for StoreBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBatch")
            .field("ops", &self.batch.len())
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let db_path = path.join("db");
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        // The hash memtable of `credentials` does not support concurrent inserts; the writers
        // are the few shard threads, whose batches RocksDB's write group inserts in turn.
        db_opts.set_allow_concurrent_memtable_write(false);
        db_opts.set_bytes_per_sync(1 << 20);
        // Explicit bounds: by default five column families of 2 x 64 MiB memtables let a long
        // rollout's server pass 750 MiB, and the WAL grow to 4 x 640 MiB (11 s of replay after a
        // SIGKILL), since `profile_stats` takes a few bytes per batch and its never-full memtable
        // keeps every WAL file live until that cap forces a flush.
        db_opts.set_db_write_buffer_size(options.memtable_bytes);
        db_opts.set_max_total_wal_size(options.max_wal_bytes);
        db_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let cfs = keys::ALL_CFS.iter().map(|name| {
            // `profile_devices` is only ever iterated (listing, export), never read by key, so
            // it gets no bloom filter, neither in its files nor in its memtable: one would cost
            // ~1.25 bytes of memory per device and a cache-missing insert per request.
            let point_read = *name != CF_PROFILE_DEVICES;
            let mut block = BlockBasedOptions::default();
            block.set_block_cache(&cache);
            // Point lookups dominate (name, credentials id): a bloom filter saves a disk read
            // for every miss, which is the common case for new devices.
            if point_read {
                block.set_bloom_filter(10.0, false);
            }
            // Index and filter blocks stay in the table readers, not the block cache: a whole-file
            // filter block is larger than one shard of the LRU cache, so cached it was evicted at
            // once and re-read (and checksummed) on every lookup; 2.5M-row imports slowed 10x.
            // Their memory is ~1.25 bytes per key per column family.
            block.set_cache_index_and_filter_blocks(false);
            let mut cf_opts = Options::default();
            cf_opts.set_block_based_table_factory(&block);
            // A bloom filter over the memtable's whole keys: most lookups are misses (a new
            // device's name and credentials id), and without it each miss walks the memtable's
            // skip list, 8% of the server's CPU under load in a perf profile.
            if point_read {
                cf_opts.set_memtable_whole_key_filtering(true);
                cf_opts.set_memtable_prefix_bloom_ratio(0.02);
            }
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *name == CF_CREDENTIALS {
                // Credentials ids are random (generated tokens, hashes), so every insert into a
                // skip list missed the cache on each level: 10% of the server's CPU in a perf
                // profile. This family is only ever read by point lookups, never iterated, so a
                // hash table of whole keys serves it in O(1); a noop prefix extractor makes the
                // whole key the hash key.
                cf_opts.set_prefix_extractor(rocksdb::SliceTransform::create_noop());
                cf_opts.set_memtable_factory(rocksdb::MemtableFactory::HashLinkList {
                    bucket_count: CREDENTIALS_MEMTABLE_BUCKETS,
                });
            }
            if *name == CF_PROFILE_STATS {
                cf_opts.set_merge_operator_associative(stats::ADD_I64_MERGE, stats::add_i64);
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, &db_path, cfs).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") || text.contains("Resource temporarily unavailable") {
                StoreError::Locked(path.to_path_buf())
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    reason: text,
                }
            }
        })?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        let store = Store {
            db,
            path: path.to_path_buf(),
            write_options,
            point_read: ReadOptions::default(),
            health: WriteHealth::new(0),
        };
        store
            .health
            .errors_acknowledged
            .store(store.background_errors(), Ordering::Release);
        store.count_devices_once()?;
        Ok(store)
    }

    /// Builds the per-profile counters from the devices when this data directory has none yet
    /// (created before the counters existed); afterwards every device write keeps them current.
    fn count_devices_once(&self) -> Result<(), StoreError> {
        let stats = self.cf(CF_PROFILE_STATS);
        if self.db.get_pinned_cf(stats, STATS_COUNTED_KEY)?.is_some() {
            return Ok(());
        }
        let mut counts: BTreeMap<String, ProfileCounts> = BTreeMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_DEVICES), IteratorMode::Start)
        {
            let (_, value) = item?;
            let device: DeviceRecord = decode(&value)?;
            let entry = counts.entry(device.profile).or_default();
            entry.stored += 1;
            entry.provisioned += i64::from(device.provisioned);
        }
        let mut batch = WriteBatch::default();
        for (profile, counts) in &counts {
            batch.put_cf(
                stats,
                keys::stat_key(profile, keys::Stat::Stored),
                counts.stored.to_le_bytes(),
            );
            batch.put_cf(
                stats,
                keys::stat_key(profile, keys::Stat::Provisioned),
                counts.provisioned.to_le_bytes(),
            );
        }
        batch.put_cf(stats, STATS_COUNTED_KEY, [1]);
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Reads a device by name.
    pub fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        match self
            .db
            .get_pinned_cf_opt(self.cf(CF_DEVICES), name.as_bytes(), &self.point_read)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The device that owns a credentials id, if any.
    pub fn credentials_owner(&self, credentials_id: &str) -> Result<Option<String>, StoreError> {
        match self.db.get_pinned_cf_opt(
            self.cf(CF_CREDENTIALS),
            credentials_id.as_bytes(),
            &self.point_read,
        )? {
            Some(bytes) => Ok(Some(decode::<CredentialsOwner>(&bytes)?.device)),
            None => Ok(None),
        }
    }

    /// Every stored profile.
    pub fn profiles(&self) -> Result<Vec<ProfileRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PROFILES), IteratorMode::Start)
        {
            let (_, value) = item?;
            out.push(decode(&value)?);
        }
        Ok(out)
    }

    /// Writes or replaces a profile, synced.
    pub fn put_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_PROFILES),
            profile.name.as_bytes(),
            encode(profile),
        );
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    /// Deletes a profile, synced.
    pub fn delete_profile(&self, name: &str) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_PROFILES), name.as_bytes());
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    /// Up to `limit` device names of a profile, in name order, strictly after `after`.
    pub fn profile_device_names(
        &self,
        profile: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = keys::profile_prefix(profile);
        let start = match after {
            Some(name) => keys::profile_device_key(profile, name),
            None => prefix.clone(),
        };
        let mut names = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_PROFILE_DEVICES),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if after.is_some() && *key == *start {
                continue;
            }
            let name = keys::device_from_profile_key(&key, prefix.len())
                .ok_or_else(|| StoreError::Corrupt("profile index key is not UTF-8".into()))?;
            names.push(name.to_string());
            if names.len() >= limit {
                break;
            }
        }
        Ok(names)
    }

    /// Whether any device belongs to the profile.
    pub fn profile_has_devices(&self, profile: &str) -> Result<bool, StoreError> {
        Ok(!self.profile_device_names(profile, None, 1)?.is_empty())
    }

    /// A new, empty batch.
    pub fn batch(&self) -> StoreBatch {
        StoreBatch::default()
    }

    /// Stages a device write (record, per-profile index entry and counters). `previous` is the
    /// record being replaced, as the caller read it, so the counters move by the difference.
    pub fn stage_device(
        &self,
        batch: &mut StoreBatch,
        device: &DeviceRecord,
        previous: Option<&DeviceRecord>,
    ) {
        batch.counts.add(previous, Some(device));
        if let Some(previous) = previous
            && previous.profile != device.profile
        {
            batch.batch.delete_cf(
                self.cf(CF_PROFILE_DEVICES),
                keys::profile_device_key(&previous.profile, &previous.name),
            );
        }
        batch
            .batch
            .put_cf(self.cf(CF_DEVICES), device.name.as_bytes(), encode(device));
        batch.batch.put_cf(
            self.cf(CF_PROFILE_DEVICES),
            keys::profile_device_key(&device.profile, &device.name),
            [],
        );
    }

    /// Stages the removal of a device, its index entry and its share of the counters.
    pub fn stage_device_delete(&self, batch: &mut StoreBatch, device: &DeviceRecord) {
        batch.counts.add(Some(device), None);
        batch
            .batch
            .delete_cf(self.cf(CF_DEVICES), device.name.as_bytes());
        batch.batch.delete_cf(
            self.cf(CF_PROFILE_DEVICES),
            keys::profile_device_key(&device.profile, &device.name),
        );
    }

    /// Devices stored and provisioned, per profile (profiles that never had a device are absent).
    pub fn profile_counts(&self) -> Result<BTreeMap<String, ProfileCounts>, StoreError> {
        let mut table = BTreeMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PROFILE_STATS), IteratorMode::Start)
        {
            let (key, value) = item?;
            stats::accumulate(&mut table, &key, &value);
        }
        Ok(table)
    }

    /// On-disk size and compaction backlog, summed over the column families.
    pub fn sizes(&self) -> StoreSizes {
        let mut sizes = StoreSizes::default();
        for name in keys::ALL_CFS {
            let property = |p: &str| {
                self.db
                    .property_int_value_cf(self.cf(name), p)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            sizes.sst_bytes += property("rocksdb.live-sst-files-size");
            sizes.memtable_bytes += property("rocksdb.cur-size-all-mem-tables");
            sizes.pending_compaction_bytes += property("rocksdb.estimate-pending-compaction-bytes");
        }
        sizes
    }

    /// RocksDB's cumulative count of background errors (failed flushes, compactions, writes).
    fn background_errors(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.background-errors")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Whether the store takes writes now. While the last write failed, or RocksDB has reported
    /// a background error since, this tries one small synced write (the counters' marker, which
    /// is rewritten with the same value): its success means RocksDB has resumed (space returned)
    /// and the store is marked writable again. Called by `/readyz` and the metrics scrape, so a
    /// store nobody writes to still notices its own recovery.
    pub fn check_health(&self) -> bool {
        let errors = self.background_errors();
        if self.writable() && errors <= self.health.errors_acknowledged.load(Ordering::Acquire) {
            return true;
        }
        let mut probe = WriteBatch::default();
        probe.put_cf(self.cf(CF_PROFILE_STATS), STATS_COUNTED_KEY, [1]);
        match self.db.write_opt(probe, &self.write_options) {
            Ok(()) => {
                self.health
                    .errors_acknowledged
                    .fetch_max(errors, Ordering::AcqRel);
                self.health.succeeded();
                true
            }
            Err(_) => {
                self.health.failed();
                false
            }
        }
    }

    /// Stages `credentials_id → device`.
    pub fn stage_credentials(&self, batch: &mut StoreBatch, credentials_id: &str, device: &str) {
        let owner = CredentialsOwner {
            device: device.to_string(),
        };
        batch.batch.put_cf(
            self.cf(CF_CREDENTIALS),
            credentials_id.as_bytes(),
            encode(&owner),
        );
    }

    /// Stages the removal of a credentials id.
    pub fn stage_credentials_delete(&self, batch: &mut StoreBatch, credentials_id: &str) {
        batch
            .batch
            .delete_cf(self.cf(CF_CREDENTIALS), credentials_id.as_bytes());
    }

    /// Writes the batch atomically; with `sync_writes` it returns only after the WAL is synced.
    pub fn commit(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let StoreBatch { mut batch, counts } = batch;
        for (profile, stat, delta) in counts.into_changes() {
            batch.merge_cf(
                self.cf(CF_PROFILE_STATS),
                keys::stat_key(&profile, stat),
                delta.to_le_bytes(),
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.db.write_opt(batch, &self.write_options) {
            // RocksDB keeps the error (a full disk, say) and refuses writes until it resumes.
            self.health.failed();
            return Err(error.into());
        }
        if !self.writable() {
            self.health.succeeded();
        }
        Ok(())
    }

    /// False from a failed write until the next successful one.
    pub fn writable(&self) -> bool {
        self.health.writable.load(Ordering::Acquire)
    }

    /// The data directory's file system: bytes free for an unprivileged writer, and its size.
    pub fn disk_space(&self) -> std::io::Result<DiskSpace> {
        let fs = rustix::fs::statvfs(&self.path)?;
        Ok(DiskSpace {
            free_bytes: fs.f_bavail.saturating_mul(fs.f_frsize),
            size_bytes: fs.f_blocks.saturating_mul(fs.f_frsize),
        })
    }

    /// How long writes have been failing, if they are.
    pub fn unwritable_for(&self) -> Option<Duration> {
        if self.writable() {
            return None;
        }
        let since = self.health.unwritable_since_ms.load(Ordering::Acquire);
        let now = self.health.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(since)))
    }

    /// A consistent, read-only view of the store as of now.
    pub fn snapshot(&self) -> StoreSnapshot<'_> {
        StoreSnapshot {
            store: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// Number of devices (an estimate from RocksDB's statistics).
    pub fn estimated_devices(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(CF_DEVICES), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Flushes memtables so that a clean shutdown leaves little WAL to replay.
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in keys::ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }
}

/// Space on the data directory's file system, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct DiskSpace {
    /// Free for an unprivileged writer.
    pub free_bytes: u64,
    /// The file system's size.
    pub size_bytes: u64,
}

/// Sizes RocksDB reports, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreSizes {
    /// Live SST files on disk.
    pub sst_bytes: u64,
    /// Memtables in memory (not yet flushed to SST files).
    pub memtable_bytes: u64,
    /// Estimated bytes compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
}

/// A point-in-time view of the store (export reads it twice and sees the same devices).
pub struct StoreSnapshot<'a> {
    store: &'a Store,
    snapshot: rocksdb::Snapshot<'a>,
}

impl std::fmt::Debug for StoreSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSnapshot").finish()
    }
}

impl StoreSnapshot<'_> {
    /// Calls `f` on every device in name order; stops at the first error.
    pub fn for_each_device(
        &self,
        mut f: impl FnMut(DeviceRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let cf = self.store.cf(CF_DEVICES);
        for item in self.snapshot.iterator_cf(cf, IteratorMode::Start) {
            let (_, value) = item?;
            f(decode(&value)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::record::Credentials;

    /// An unprovisioned device with an access token `tok-<name>`.
    pub(crate) fn device(name: &str, profile: &str) -> DeviceRecord {
        DeviceRecord {
            credentials: Some(Credentials::AccessToken {
                token: format!("tok-{name}"),
            }),
            ..DeviceRecord::new(name, profile, "t", 0)
        }
    }

    #[test]
    fn committed_batch_survives_reopen_and_lists_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let mut batch = store.batch();
            for name in ["b", "a", "c"] {
                store.stage_device(&mut batch, &device(name, "p"), None);
                store.stage_credentials(&mut batch, &format!("tok-{name}"), name);
            }
            store.stage_device(&mut batch, &device("z", "other"), None);
            store.commit(batch).unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.device("a").unwrap(), Some(device("a", "p")));
        assert_eq!(
            store.credentials_owner("tok-b").unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(
            store.profile_device_names("p", None, 10).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            store.profile_device_names("p", Some("a"), 1).unwrap(),
            ["b"]
        );
        assert!(!store.profile_has_devices("nobody").unwrap());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn rocksdb_computes_crc32c_in_hardware() {
        // Every WAL record is checksummed with CRC32C. RocksDB uses the CPU's crc32 instruction
        // only when its C++ was compiled with SSE4.2 (.cargo/config.toml); otherwise lookup
        // tables, about 1,000 instructions per provisioned device. It says which in its LOG.
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &StoreOptions::default()).unwrap());
        let log = std::fs::read_to_string(dir.path().join("db").join("LOG")).unwrap();
        let line = log
            .lines()
            .find(|line| line.contains("Fast CRC32 supported"))
            .expect("RocksDB's LOG names its CRC32C implementation");
        assert!(
            line.ends_with("Fast CRC32 supported: Supported on x86"),
            "{line}"
        );
    }

    #[test]
    fn profile_counters_follow_writes_survive_reopen_and_are_rebuilt_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let mut batch = store.batch();
            for name in ["a", "b", "c"] {
                store.stage_device(&mut batch, &device(name, "p"), None);
            }
            store.commit(batch).unwrap();
            let mut batch = store.batch();
            let mut provisioned = device("a", "p");
            provisioned.provisioned = true;
            store.stage_device(&mut batch, &provisioned, Some(&device("a", "p")));
            store.stage_device_delete(&mut batch, &device("c", "p"));
            store.commit(batch).unwrap();
            let want = ProfileCounts {
                stored: 2,
                provisioned: 1,
            };
            assert_eq!(store.profile_counts().unwrap()["p"], want);
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.profile_counts().unwrap()["p"].stored, 2);
        // A directory from before the counters: the marker and counters are gone, so open
        // counts the devices again.
        store
            .db
            .delete_range_cf(
                store.cf(CF_PROFILE_STATS),
                b"\0".as_slice(),
                b"\xff".as_slice(),
            )
            .unwrap();
        drop(store);
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let want = ProfileCounts {
            stored: 2,
            provisioned: 1,
        };
        assert_eq!(store.profile_counts().unwrap()["p"], want);
    }

    /// Commits `count` devices with their credentials, 500 to a batch, in the profile `p`.
    fn write_devices(store: &Store, prefix: &str, count: usize) {
        for chunk in 0..count.div_ceil(500) {
            let mut batch = store.batch();
            for i in chunk * 500..((chunk + 1) * 500).min(count) {
                let name = format!("{prefix}-{i:08}-{}", "x".repeat(100));
                store.stage_device(&mut batch, &device(&name, "p"), None);
                store.stage_credentials(&mut batch, &format!("tok-{name}"), &name);
            }
            store.commit(batch).unwrap();
        }
    }

    /// Bytes of the WAL files in the store's RocksDB directory.
    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir.join("db"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    /// Polls `probe` until it holds (RocksDB flushes and deletes WAL files in the background).
    fn eventually(what: &str, mut probe: impl FnMut() -> (bool, u64)) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (done, seen) = probe();
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: still {seen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn the_wal_stays_under_its_cap_and_every_device_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_wal_bytes: 1 << 20,
            ..StoreOptions::default()
        };
        let mut more = 0;
        {
            let store = Store::open(dir.path(), &options).unwrap();
            // About 25 MiB of WAL, while no column family fills its 64 MiB memtable: without
            // the cap it would all stay live.
            write_devices(&store, "w", 40_000);
            // RocksDB checks the cap on each write and frees one WAL file per check, so the
            // probe keeps writing, as a live server would.
            eventually("live WAL bytes", || {
                more += 1;
                write_devices(&store, &format!("more{more}"), 1);
                let bytes = wal_bytes(dir.path());
                (bytes <= 3 << 20, bytes)
            });
        }
        let store = Store::open(dir.path(), &options).unwrap();
        assert_eq!(store.profile_counts().unwrap()["p"].stored, 40_000 + more);
        let last = format!("w-{:08}-{}", 39_999, "x".repeat(100));
        assert_eq!(store.device(&last).unwrap(), Some(device(&last, "p")));
    }

    #[test]
    fn memtables_stay_under_their_cap() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            memtable_bytes: 16 << 20,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), &options).unwrap();
        // About 75 MiB of memtable inserts over three column families, each below its own
        // 64 MiB write buffer: only the shared cap makes RocksDB flush them. (The credentials
        // memtable's hash buckets alone take 8 MiB, so the cap must be above that.)
        write_devices(&store, "m", 120_000);
        eventually("memtable bytes", || {
            let bytes = store.sizes().memtable_bytes;
            (bytes <= 32 << 20, bytes)
        });
        assert!(store.sizes().sst_bytes > 0);
    }

    /// The size of the bloom filters in a column family's table files.
    fn filter_bytes(store: &Store, cf: &str) -> u64 {
        let props = store
            .db
            .property_value_cf(store.cf(cf), "rocksdb.aggregated-table-properties")
            .unwrap()
            .unwrap();
        props
            .split(';')
            .find_map(|p| p.trim().strip_prefix("filter block size="))
            .unwrap_or_else(|| panic!("no filter size in {props}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn only_the_families_read_by_key_carry_bloom_filters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        write_devices(&store, "b", 5_000);
        for cf in [CF_DEVICES, CF_CREDENTIALS, CF_PROFILE_DEVICES] {
            store.db.flush_cf(store.cf(cf)).unwrap();
        }
        // About 1.25 bytes per key where lookups by key happen.
        assert!(filter_bytes(&store, CF_DEVICES) >= 5_000);
        assert!(filter_bytes(&store, CF_CREDENTIALS) >= 5_000);
        assert_eq!(filter_bytes(&store, CF_PROFILE_DEVICES), 0);
        // The index without a filter still lists every device of the profile.
        assert_eq!(
            store.profile_device_names("p", None, 10_000).unwrap().len(),
            5_000
        );
    }

    #[test]
    fn second_open_of_same_directory_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let second = Store::open(dir.path(), &StoreOptions::default());
        assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
    }
}
