//! Configuration: the embedded defaults (`deploy/provisiond.toml`), a file, environment and
//! flags, merged in that order and validated in one place. Every limit lives here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::throttle::ThrottleOptions;

/// The default configuration file, shipped as `deploy/provisiond.toml`.
pub const DEFAULT_TOML: &str = include_str!("../deploy/provisiond.toml");

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// An environment variable or `--set` gave a key a value of the wrong type.
    #[error("invalid value for {key} (from {source_name}): {reason}")]
    Override {
        /// The key, dotted.
        key: String,
        /// Where the value came from.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid config value {key}: {reason}")]
    Invalid {
        /// The key, dotted.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Bind address of every listener.
    pub bind: IpAddr,
    /// Admin token, if configured.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Graceful stop deadline.
    pub shutdown_timeout_ms: u64,
    /// HTTP listener.
    pub http: HttpConfig,
    /// MQTT listeners.
    pub mqtt: MqttConfig,
    /// CoAP listener.
    pub coap: CoapConfig,
    /// The sharded engine.
    pub engine: EngineConfig,
    /// RocksDB.
    pub store: StoreConfig,
    /// Brute-force protection.
    pub throttle: ThrottleConfig,
    /// Logging.
    pub log: LogConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("bind", &self.bind)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("http", &self.http)
            .field("mqtt", &self.mqtt)
            .field("coap", &self.coap)
            .field("engine", &self.engine)
            .field("store", &self.store)
            .field("throttle", &self.throttle)
            .field("log", &self.log)
            .finish()
    }
}

/// `[http]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Port (0 = any).
    pub port: u16,
    /// Body limit of `/api/v1/provision`.
    pub max_body_bytes: usize,
    /// Connection limit per worker.
    pub max_connections_per_worker: usize,
    /// Worker threads (0 = cores).
    pub workers: usize,
    /// Keep-alive idle timeout.
    pub keep_alive_s: u16,
}

/// `[mqtt]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Plain port (0 = any).
    pub port: u16,
    /// TLS port (0 = any); served only with a certificate and key.
    pub tls_port: u16,
    /// PEM certificate chain of the TLS listener.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle that client certificates must chain to; none asked for when unset.
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Refuse TLS clients without a certificate (needs `tls_client_ca_file`).
    #[serde(default)]
    pub tls_client_cert_required: bool,
    /// Largest packet.
    pub max_packet_bytes: u32,
    /// CONNECT deadline, counted from the TCP accept.
    pub connect_timeout_ms: u64,
    /// Close a provisioning session this long after its last response.
    pub close_after_response_ms: u64,
    /// Connection limit per worker.
    pub max_connections_per_worker: usize,
    /// Worker threads serving MQTT (0 = cores).
    pub workers: usize,
}

impl MqttConfig {
    /// Whether the TLS listener is configured.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }
}

/// `[coap]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapConfig {
    /// UDP port (0 = any).
    pub port: u16,
    /// Requests decided at once.
    pub max_in_flight: usize,
    /// How long responses are remembered for retransmissions.
    pub exchange_lifetime_ms: u64,
    /// Most remembered responses.
    pub dedup_cache_entries: usize,
    /// Largest Block1-assembled body.
    pub max_request_bytes: usize,
}

/// `[engine]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Shard threads (0 = half the cores, at least one).
    pub shards: u16,
    /// Mailbox capacity per shard.
    pub mailbox_capacity: usize,
    /// Messages per group commit.
    pub max_batch: usize,
    /// Wait for mailbox room.
    pub enqueue_timeout_ms: u64,
}

/// `[store]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Sync the WAL per batch.
    pub sync_writes: bool,
    /// Block cache size.
    pub block_cache_bytes: usize,
    /// All memtables together.
    pub memtable_bytes: usize,
    /// The live write-ahead log (bounds crash recovery).
    pub max_wal_bytes: u64,
}

impl StoreConfig {
    /// The store's options.
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            sync_writes: self.sync_writes,
            block_cache_bytes: self.block_cache_bytes,
            memtable_bytes: self.memtable_bytes,
            max_wal_bytes: self.max_wal_bytes,
        }
    }
}

/// `[throttle]`: brute-force protection of provision keys and secrets.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// On by default.
    pub enabled: bool,
    /// Failed attempts one source address may make at once.
    pub per_source_burst: u32,
    /// Failed attempts per minute a source address regains.
    pub per_source_per_minute: u32,
    /// Wrong secrets one profile may see at once.
    pub per_profile_burst: u32,
    /// Wrong secrets per minute a profile regains.
    pub per_profile_per_minute: u32,
    /// Most buckets kept in memory.
    pub max_tracked: usize,
}

/// `[log]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// tracing filter directive.
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

/// Values given on the command line or in the environment; `None` leaves the file's value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir` / `PROVISIOND_DATA_DIR`
    pub data_dir: Option<PathBuf>,
    /// `--bind` / `PROVISIOND_BIND`
    pub bind: Option<IpAddr>,
    /// `--http-port` / `PROVISIOND_HTTP_PORT`
    pub http_port: Option<u16>,
    /// `--mqtt-port` / `PROVISIOND_MQTT_PORT`
    pub mqtt_port: Option<u16>,
    /// `--mqtt-tls-port` / `PROVISIOND_MQTT_TLS_PORT`
    pub mqtt_tls_port: Option<u16>,
    /// `--coap-port` / `PROVISIOND_COAP_PORT`
    pub coap_port: Option<u16>,
    /// `--shards` / `PROVISIOND_SHARDS`
    pub shards: Option<u16>,
    /// `PROVISIOND_ADMIN_TOKEN`
    pub admin_token: Option<String>,
    /// `--log-format` / `PROVISIOND_LOG_FORMAT`
    pub log_format: Option<LogFormat>,
    /// `--sync-writes` / `PROVISIOND_SYNC_WRITES`
    pub sync_writes: Option<bool>,
    /// `PROVISIOND_*` environment variables as (name, value); each one named after a key
    /// (`http.max_body_bytes` → `PROVISIOND_HTTP_MAX_BODY_BYTES`) sets that key.
    pub environment: Vec<(String, String)>,
    /// `--set key=value` pairs, applied after the environment.
    pub sets: Vec<(String, String)>,
}

/// Keys that have no value in the defaults file (so they are not found by walking it).
const OPTIONAL_KEYS: [&str; 4] = [
    "admin_token",
    "mqtt.tls_cert_file",
    "mqtt.tls_key_file",
    "mqtt.tls_client_ca_file",
];

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    format!("PROVISIOND_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Every settable key, dotted (`http.max_body_bytes`).
pub fn keys() -> Vec<String> {
    let defaults: toml::Table =
        toml::from_str(DEFAULT_TOML).expect("the embedded default configuration is valid");
    let mut keys = Vec::new();
    for (name, value) in &defaults {
        match value {
            toml::Value::Table(section) => {
                keys.extend(section.keys().map(|k| format!("{name}.{k}")));
            }
            _ => keys.push(name.clone()),
        }
    }
    keys.extend(OPTIONAL_KEYS.iter().map(|k| k.to_string()));
    keys
}

/// Sets a dotted key in the merged table; the value is read as TOML, or else as a string, and
/// must have the type of the key's default.
fn set_key(
    table: &mut toml::Table,
    key: &str,
    text: &str,
    source: &str,
) -> Result<(), ConfigError> {
    let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()));
    let current = match key.split_once('.') {
        Some((section, leaf)) => table
            .get(section)
            .and_then(|s| s.as_table())
            .and_then(|s| s.get(leaf)),
        None => table.get(key),
    };
    let expected = current.map_or("string", toml::Value::type_str);
    if value.type_str() != expected {
        return Err(ConfigError::Override {
            key: key.to_string(),
            source_name: source.to_string(),
            reason: format!("expected {expected}, got {text:?}"),
        });
    }
    match key.split_once('.') {
        Some((section, leaf)) => {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(section) = entry {
                section.insert(leaf.to_string(), value);
            }
        }
        None => {
            table.insert(key.to_string(), value);
        }
    }
    Ok(())
}

impl Config {
    /// The built-in defaults.
    pub fn defaults() -> Config {
        toml::from_str(DEFAULT_TOML).expect("the embedded default configuration is valid")
    }

    /// Defaults, then `file` (if any), then `overrides`; validated.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_TOML).expect("the embedded default configuration is valid");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                reason: e.message().to_string(),
            })?;
            merge(&mut merged, table);
        }
        let known = keys();
        for (name, value) in &overrides.environment {
            if let Some(key) = known.iter().find(|k| env_name(k) == *name) {
                set_key(&mut merged, key, value, name)?;
            }
        }
        for (key, value) in &overrides.sets {
            if !known.contains(key) {
                return Err(ConfigError::Invalid {
                    key: "--set",
                    reason: format!("unknown key {key:?} (see `provisiond config --default`)"),
                });
            }
            set_key(&mut merged, key, value, "--set")?;
        }
        let mut config: Config =
            merged
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: file.map(Path::to_path_buf).unwrap_or_default(),
                    reason: e.message().to_string(),
                })?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = o.bind {
            self.bind = v;
        }
        if let Some(v) = o.http_port {
            self.http.port = v;
        }
        if let Some(v) = o.mqtt_port {
            self.mqtt.port = v;
        }
        if let Some(v) = o.mqtt_tls_port {
            self.mqtt.tls_port = v;
        }
        if let Some(v) = o.coap_port {
            self.coap.port = v;
        }
        if let Some(v) = o.shards {
            self.engine.shards = v;
        }
        if let Some(v) = &o.admin_token {
            self.admin_token = Some(v.clone());
        }
        if let Some(v) = o.log_format {
            self.log.format = v;
        }
        if let Some(v) = o.sync_writes {
            self.store.sync_writes = v;
        }
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least(key: &'static str, value: usize, min: usize) -> Result<(), ConfigError> {
            if value < min {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be at least {min}, got {value}"),
                });
            }
            Ok(())
        }
        at_least("http.max_body_bytes", self.http.max_body_bytes, 256)?;
        at_least(
            "http.max_connections_per_worker",
            self.http.max_connections_per_worker,
            1,
        )?;
        at_least(
            "mqtt.max_packet_bytes",
            self.mqtt.max_packet_bytes as usize,
            256,
        )?;
        at_least(
            "mqtt.connect_timeout_ms",
            self.mqtt.connect_timeout_ms as usize,
            1,
        )?;
        at_least(
            "mqtt.max_connections_per_worker",
            self.mqtt.max_connections_per_worker,
            1,
        )?;
        at_least(
            "mqtt.close_after_response_ms",
            self.mqtt.close_after_response_ms as usize,
            1,
        )?;
        if self.mqtt.tls_cert_file.is_some() != self.mqtt.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "mqtt.tls_cert_file",
                reason: "tls_cert_file and tls_key_file must be set together".into(),
            });
        }
        if self.mqtt.tls_client_cert_required && self.mqtt.tls_client_ca_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "mqtt.tls_client_cert_required",
                reason: "needs mqtt.tls_client_ca_file to verify the certificates against".into(),
            });
        }
        at_least("coap.max_in_flight", self.coap.max_in_flight, 1)?;
        at_least(
            "coap.exchange_lifetime_ms",
            self.coap.exchange_lifetime_ms as usize,
            1,
        )?;
        at_least("coap.dedup_cache_entries", self.coap.dedup_cache_entries, 1)?;
        at_least("coap.max_request_bytes", self.coap.max_request_bytes, 256)?;
        at_least("engine.mailbox_capacity", self.engine.mailbox_capacity, 1)?;
        at_least("engine.max_batch", self.engine.max_batch, 1)?;
        at_least("store.memtable_bytes", self.store.memtable_bytes, 1 << 20)?;
        at_least(
            "store.max_wal_bytes",
            self.store.max_wal_bytes as usize,
            1 << 20,
        )?;
        let t = &self.throttle;
        at_least("throttle.per_source_burst", t.per_source_burst as usize, 1)?;
        at_least(
            "throttle.per_profile_burst",
            t.per_profile_burst as usize,
            1,
        )?;
        at_least("throttle.max_tracked", t.max_tracked, 1)?;
        if self.engine.shards > 1024 {
            return Err(ConfigError::Invalid {
                key: "engine.shards",
                reason: format!("must be at most 1024, got {}", self.engine.shards),
            });
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            return Err(ConfigError::Invalid {
                key: "admin_token",
                reason: "must be at least 16 characters".into(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: e.to_string(),
            });
        }
        Ok(())
    }

    /// The engine's brute-force protection settings.
    pub fn throttle_options(&self) -> ThrottleOptions {
        let t = &self.throttle;
        ThrottleOptions {
            enabled: t.enabled,
            per_source_burst: t.per_source_burst,
            per_source_per_minute: t.per_source_per_minute,
            per_profile_burst: t.per_profile_burst,
            per_profile_per_minute: t.per_profile_per_minute,
            max_tracked: t.max_tracked,
        }
    }

    /// Shard count with 0 resolved to half the cores, at least one: a shard's part of a request
    /// is about a third of the server's CPU, the transports' workers take the rest, and on two
    /// cores one shard served 2-15% more HTTP provisions/s than two (BENCHMARKS.md).
    pub fn shard_count(&self) -> u16 {
        match self.engine.shards {
            0 => cores().div_ceil(2) as u16,
            n => n,
        }
    }

    /// HTTP workers with 0 resolved to the core count.
    pub fn http_workers(&self) -> usize {
        match self.http.workers {
            0 => cores(),
            n => n,
        }
    }

    /// MQTT workers with 0 resolved to the core count.
    pub fn mqtt_workers(&self) -> usize {
        match self.mqtt.workers {
            0 => cores(),
            n => n,
        }
    }

    /// Enqueue timeout as a duration.
    pub fn enqueue_timeout(&self) -> Duration {
        Duration::from_millis(self.engine.enqueue_timeout_ms)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Deep-merges `overlay` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_store_defaults_are_the_stores_own() {
        // `StoreOptions::default()` (tests, benches) and deploy/provisiond.toml state the same
        // defaults; this keeps them from drifting apart, a field added later included.
        assert_eq!(
            Config::defaults().store.options(),
            crate::store::StoreOptions::default()
        );
    }

    #[test]
    fn embedded_defaults_are_valid_and_match_spec_ports() {
        let config = Config::defaults();
        config.validate().unwrap();
        assert_eq!(config.http.port, 8080);
        assert_eq!(config.mqtt.port, 1883);
        assert_eq!(config.mqtt.tls_port, 8883);
        assert!(!config.mqtt.tls_enabled());
        assert_eq!(config.coap.port, 5683);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(config.store.sync_writes);
    }

    #[test]
    fn file_then_overrides_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[http]\nport = 9000\nmax_body_bytes = 1024\n").unwrap();
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.http.port, 9000);
        assert_eq!(config.http.max_body_bytes, 1024);
        assert_eq!(config.http.workers, 0, "untouched keys keep their defaults");
        let overrides = Overrides {
            http_port: Some(9100),
            ..Overrides::default()
        };
        assert_eq!(
            Config::load(Some(&path), &overrides).unwrap().http.port,
            9100
        );
    }

    #[test]
    fn every_key_can_be_set_from_the_environment_and_with_set() {
        let overrides = Overrides {
            environment: vec![
                ("PROVISIOND_HTTP_MAX_BODY_BYTES".into(), "131072".into()),
                ("PROVISIOND_DATA_DIR".into(), "/srv/provisiond".into()),
                ("PROVISIOND_MQTT_TLS_CERT_FILE".into(), "/etc/c.pem".into()),
                ("PROVISIOND_MQTT_TLS_KEY_FILE".into(), "/etc/k.pem".into()),
                ("PROVISIOND_UNRELATED".into(), "x".into()),
            ],
            sets: vec![("engine.max_batch".into(), "64".into())],
            ..Overrides::default()
        };
        let config = Config::load(None, &overrides).unwrap();
        assert_eq!(config.http.max_body_bytes, 131072);
        assert_eq!(config.data_dir, PathBuf::from("/srv/provisiond"));
        assert!(config.mqtt.tls_enabled());
        assert_eq!(config.engine.max_batch, 64);
        let unknown = Overrides {
            sets: vec![("http.nope".into(), "1".into())],
            ..Overrides::default()
        };
        assert!(
            Config::load(None, &unknown)
                .unwrap_err()
                .to_string()
                .contains("http.nope")
        );
        let wrong_type = Overrides {
            environment: vec![("PROVISIOND_HTTP_PORT".into(), "eighty".into())],
            ..Overrides::default()
        };
        let err = Config::load(None, &wrong_type).unwrap_err().to_string();
        assert!(
            err.contains("http.port") && err.contains("PROVISIOND_HTTP_PORT"),
            "{err}"
        );
        assert_eq!(env_name("mqtt.tls_port"), "PROVISIOND_MQTT_TLS_PORT");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[http]\nprot = 1\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        std::fs::write(&path, "[engine]\nmax_batch = 0\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("engine.max_batch"), "{err}");
        let missing = Config::load(Some(Path::new("/nonexistent.toml")), &Overrides::default());
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}
