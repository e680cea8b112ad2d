//! The command implementations behind `main.rs`: where a command acts (a running server's admin
//! API, or a data directory no server holds) and the shared settings.

pub mod agent;
pub mod bulk;
pub mod profile;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use provisiond::config::{Config, LogFormat, Overrides};
use provisiond::engine::throttle::ThrottleOptions;
use provisiond::engine::{Engine, EngineOptions};
use provisiond::server;
use provisiond::store::Store;

/// Settings shared by every command that reads the configuration.
#[derive(Args, Clone)]
pub struct Settings {
    /// Configuration file (TOML); see `provisiond config --default`.
    #[arg(long, env = "PROVISIOND_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (RocksDB, admin token).
    #[arg(long, env = "PROVISIOND_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Address the listeners bind to.
    #[arg(long, env = "PROVISIOND_BIND")]
    pub bind: Option<IpAddr>,
    /// HTTP port (0 = any free port).
    #[arg(long, env = "PROVISIOND_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// MQTT port (0 = any free port).
    #[arg(long, env = "PROVISIOND_MQTT_PORT")]
    pub mqtt_port: Option<u16>,
    /// MQTT over TLS port (served when a certificate is configured).
    #[arg(long, env = "PROVISIOND_MQTT_TLS_PORT")]
    pub mqtt_tls_port: Option<u16>,
    /// CoAP (UDP) port (0 = any free port).
    #[arg(long, env = "PROVISIOND_COAP_PORT")]
    pub coap_port: Option<u16>,
    /// Shard threads (0 = half the cores, at least one).
    #[arg(long, env = "PROVISIOND_SHARDS")]
    pub shards: Option<u16>,
    /// Log format: human or json.
    #[arg(long, env = "PROVISIOND_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Sync the WAL before answering (true/false). Only benchmarks turn it off.
    #[arg(long, env = "PROVISIOND_SYNC_WRITES")]
    pub sync_writes: Option<bool>,
    /// Set any configuration key, e.g. --set http.max_body_bytes=131072 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set, global = true)]
    pub set: Vec<(String, String)>,
}

fn parse_set(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// Where a management command acts.
#[derive(Args)]
pub struct Target {
    /// Base URL of a running server, e.g. http://127.0.0.1:8080. Without it the command opens
    /// the data directory itself (which must not be held by a running server).
    #[arg(long, env = "PROVISIOND_SERVER", global = true)]
    pub server: Option<String>,
    /// Admin token for --server (default: PROVISIOND_ADMIN_TOKEN, else <data dir>/admin.token).
    #[arg(
        long,
        env = "PROVISIOND_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be human or json".into()),
    }
}

/// The configuration with these settings applied.
pub fn load(settings: &Settings) -> anyhow::Result<Config> {
    let overrides = Overrides {
        data_dir: settings.data_dir.clone(),
        bind: settings.bind,
        http_port: settings.http_port,
        mqtt_port: settings.mqtt_port,
        mqtt_tls_port: settings.mqtt_tls_port,
        coap_port: settings.coap_port,
        shards: settings.shards,
        admin_token: std::env::var("PROVISIOND_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        log_format: settings.log_format,
        sync_writes: settings.sync_writes,
        environment: std::env::vars()
            .filter(|(name, _)| name.starts_with("PROVISIOND_"))
            .collect(),
        sets: settings.set.clone(),
    };
    Ok(Config::load(settings.config.as_deref(), &overrides)?)
}

/// Opens the data directory and starts an engine in this process (no server may hold it).
pub fn local_engine(settings: &Settings) -> anyhow::Result<Engine> {
    let config = load(settings)?;
    let store = Arc::new(
        Store::open(&config.data_dir, &config.store.options())
            .context("opening the data directory (use --server URL to act on a running server)")?,
    );
    Ok(Engine::spawn(
        store,
        EngineOptions {
            shards: config.shard_count(),
            mailbox_capacity: config.engine.mailbox_capacity,
            max_batch: config.engine.max_batch,
            enqueue_timeout: config.enqueue_timeout(),
            // Local mode has no network clients to throttle.
            throttle: ThrottleOptions::disabled(),
        },
    )?)
}

/// A running server's admin API.
pub struct Remote {
    /// HTTP agent that returns error statuses as responses.
    pub agent: ureq::Agent,
    /// Base URL without a trailing slash.
    pub base: String,
    /// `Bearer <token>`.
    pub auth: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("auth", &"***")
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// Connects to `url` with the token from the target (flag, environment, or token file).
    pub fn new(url: &str, target: &Target) -> anyhow::Result<Remote> {
        let token = match &target.admin_token {
            Some(token) => token.clone(),
            None => {
                let config = load(&target.settings)?;
                let path = server::admin_token_path(&config.data_dir);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --admin-token or PROVISIOND_ADMIN_TOKEN (could not read {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Remote {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            base: url.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
        })
    }
}

/// Percent-encodes a path segment or query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
