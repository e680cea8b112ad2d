//! The provisiond command line: `serve`, `profile …`, `config`. A thin edge: parse flags, load the
//! configuration, call the library, print one line naming any failure and exit non-zero.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use provisiond::admin;
use provisiond::config::{Config, LogFormat, Overrides};
use provisiond::engine::{Engine, EngineOptions};
use provisiond::server;
use provisiond::store::{Store, StoreOptions};

#[derive(Parser)]
#[command(
    name = "provisiond",
    version,
    about = "IoT device provisioning server, wire-compatible with ThingsBoard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the provisioning server (HTTP and MQTT provisioning, admin API, metrics).
    Serve(Settings),
    /// Create, list, show, update and delete device profiles.
    Profile {
        #[command(subcommand)]
        action: ProfileAction,
        #[command(flatten)]
        target: Target,
    },
    /// Print the configuration: the built-in defaults, or the effective values.
    Config {
        /// Print the default configuration file (deploy/provisiond.toml).
        #[arg(long = "default", conflicts_with = "effective")]
        default: bool,
        /// Print the configuration after the file, environment and flags are applied.
        #[arg(long)]
        effective: bool,
        #[command(flatten)]
        settings: Settings,
    },
}

/// Settings shared by every command that reads the configuration.
#[derive(Args, Clone)]
struct Settings {
    /// Configuration file (TOML); see `provisiond config --default`.
    #[arg(long, env = "PROVISIOND_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (RocksDB, admin token).
    #[arg(long, env = "PROVISIOND_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Address the listeners bind to.
    #[arg(long, env = "PROVISIOND_BIND")]
    bind: Option<IpAddr>,
    /// HTTP port (0 = any free port).
    #[arg(long, env = "PROVISIOND_HTTP_PORT")]
    http_port: Option<u16>,
    /// MQTT port (0 = any free port).
    #[arg(long, env = "PROVISIOND_MQTT_PORT")]
    mqtt_port: Option<u16>,
    /// MQTT over TLS port (served when a certificate is configured).
    #[arg(long, env = "PROVISIOND_MQTT_TLS_PORT")]
    mqtt_tls_port: Option<u16>,
    /// CoAP (UDP) port (0 = any free port).
    #[arg(long, env = "PROVISIOND_COAP_PORT")]
    coap_port: Option<u16>,
    /// Shard threads (0 = one per core).
    #[arg(long, env = "PROVISIOND_SHARDS")]
    shards: Option<u16>,
    /// Log format: human or json.
    #[arg(long, env = "PROVISIOND_LOG_FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Sync the WAL before answering (true/false). Only benchmarks turn it off.
    #[arg(long, env = "PROVISIOND_SYNC_WRITES")]
    sync_writes: Option<bool>,
}

/// Where profile commands act: a running server's admin API, or a data directory directly.
#[derive(Args)]
struct Target {
    /// Base URL of a running server, e.g. http://127.0.0.1:8080. Without it the command opens
    /// the data directory itself (which must not be held by a running server).
    #[arg(long, env = "PROVISIOND_SERVER", global = true)]
    server: Option<String>,
    /// Admin token for --server (default: PROVISIOND_ADMIN_TOKEN, else <data dir>/admin.token).
    #[arg(
        long,
        env = "PROVISIOND_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum ProfileAction {
    /// Create a profile; key and secret are generated when not given.
    Create {
        /// Profile name.
        name: String,
        /// ALLOW_CREATE_NEW_DEVICES (default), CHECK_PRE_PROVISIONED_DEVICES or DISABLED.
        #[arg(long)]
        strategy: Option<String>,
        /// Provision key.
        #[arg(long)]
        key: Option<String>,
        /// Provision secret.
        #[arg(long)]
        secret: Option<String>,
        /// RETURN_EXISTING (default) or REJECT.
        #[arg(long)]
        reprovision_policy: Option<String>,
        /// Device type of new devices (default: the profile name).
        #[arg(long)]
        device_type: Option<String>,
    },
    /// List profiles.
    List,
    /// Show one profile, key and secret included.
    Show {
        /// Profile name.
        name: String,
    },
    /// Change a profile's strategy, secret, policy or device type.
    Update {
        /// Profile name.
        name: String,
        /// New strategy.
        #[arg(long)]
        strategy: Option<String>,
        /// New secret.
        #[arg(long)]
        secret: Option<String>,
        /// New re-provision policy.
        #[arg(long)]
        reprovision_policy: Option<String>,
        /// New device type.
        #[arg(long)]
        device_type: Option<String>,
    },
    /// Delete a profile.
    Delete {
        /// Profile name.
        name: String,
        /// Also delete the profile's devices.
        #[arg(long)]
        force: bool,
    },
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be human or json".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("provisiond: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(settings) => serve(&settings),
        Command::Profile { action, target } => profile(action, target),
        Command::Config {
            default,
            effective,
            settings,
        } => {
            if default || !effective {
                print!("{}", provisiond::config::DEFAULT_TOML);
            } else {
                let config = load(&settings)?;
                println!("{config:#?}");
            }
            Ok(())
        }
    }
}

fn load(settings: &Settings) -> anyhow::Result<Config> {
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
    };
    Ok(Config::load(settings.config.as_deref(), &overrides)?)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // ntex and ntex-mqtt trace whole packets and bodies, provision secrets and credentials
    // included, so their TRACE events are dropped whatever the filter asks for.
    let no_wire_traces = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("ntex"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().finish().with(no_wire_traces).init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(no_wire_traces)
            .init(),
    }
}

fn serve(settings: &Settings) -> anyhow::Result<()> {
    let config = load(settings)?;
    init_logging(&config);
    let running = server::start(&config, true)?;
    println!(
        "provisiond: serving HTTP on {} (data in {})",
        running.http_addr(),
        config.data_dir.display()
    );
    println!("provisiond: serving MQTT on {}", running.mqtt_addr());
    if let Some(addr) = running.mqtt_tls_addr() {
        println!("provisiond: serving MQTT over TLS on {addr}");
    }
    running.wait()?;
    Ok(())
}

fn profile(action: ProfileAction, target: Target) -> anyhow::Result<()> {
    let reply = match &target.server {
        Some(url) => profile_remote(&action, url, &target)?,
        None => profile_local(&action, &target.settings)?,
    };
    if reply.status >= 400 {
        let message = reply.body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| reply.body.to_string());
        bail!("{message}");
    }
    match (&action, &reply.body) {
        (ProfileAction::List, Value::Array(profiles)) => {
            println!("{:<32} {:<30} {:<16} KEY", "NAME", "STRATEGY", "POLICY");
            for p in profiles {
                println!(
                    "{:<32} {:<30} {:<16} {}",
                    p["name"].as_str().unwrap_or_default(),
                    p["strategy"].as_str().unwrap_or_default(),
                    p["reprovisionPolicy"].as_str().unwrap_or_default(),
                    p["provisionDeviceKey"].as_str().unwrap_or_default()
                );
            }
        }
        (_, body) => println!("{}", serde_json::to_string_pretty(body)?),
    }
    Ok(())
}

fn create_body(action: &ProfileAction) -> Value {
    match action {
        ProfileAction::Create {
            name,
            strategy,
            key,
            secret,
            reprovision_policy,
            device_type,
        } => {
            let mut body = json!({ "name": name });
            set(&mut body, "strategy", strategy);
            set(&mut body, "provisionDeviceKey", key);
            set(&mut body, "provisionDeviceSecret", secret);
            set(&mut body, "reprovisionPolicy", reprovision_policy);
            set(&mut body, "deviceType", device_type);
            body
        }
        ProfileAction::Update {
            strategy,
            secret,
            reprovision_policy,
            device_type,
            ..
        } => {
            let mut body = json!({});
            set(&mut body, "strategy", strategy);
            set(&mut body, "provisionDeviceSecret", secret);
            set(&mut body, "reprovisionPolicy", reprovision_policy);
            set(&mut body, "deviceType", device_type);
            body
        }
        _ => Value::Null,
    }
}

fn set(body: &mut Value, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        body[key] = json!(v);
    }
}

fn profile_local(action: &ProfileAction, settings: &Settings) -> anyhow::Result<admin::Reply> {
    let config = load(settings)?;
    let store = Arc::new(
        Store::open(
            &config.data_dir,
            &StoreOptions {
                sync_writes: true,
                block_cache_bytes: 8 << 20,
            },
        )
        .context("opening the data directory (use --server URL to act on a running server)")?,
    );
    let engine = Engine::spawn(
        store,
        EngineOptions {
            shards: config.shard_count(),
            mailbox_capacity: config.engine.mailbox_capacity,
            max_batch: config.engine.max_batch,
            enqueue_timeout: config.enqueue_timeout(),
        },
    )?;
    let body = serde_json::to_vec(&create_body(action))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(async {
        match action {
            ProfileAction::Create { .. } => admin::create_profile(&engine, &body),
            ProfileAction::List => admin::list_profiles(&engine),
            ProfileAction::Show { name } => admin::get_profile(&engine, name),
            ProfileAction::Update { name, .. } => admin::update_profile(&engine, name, &body),
            ProfileAction::Delete { name, force } => {
                admin::delete_profile(&engine, name, *force).await
            }
        }
    });
    drop(runtime);
    engine.shutdown();
    Ok(reply)
}

fn profile_remote(
    action: &ProfileAction,
    url: &str,
    target: &Target,
) -> anyhow::Result<admin::Reply> {
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
    let base = url.trim_end_matches('/');
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let profiles = format!("{base}/api/admin/profiles");
    let one = |name: &str| format!("{profiles}/{}", percent_encode_segment(name));
    let body = create_body(action);
    let response = match action {
        ProfileAction::Create { .. } => agent
            .post(&profiles)
            .header("Authorization", &auth)
            .send_json(&body),
        ProfileAction::List => agent.get(&profiles).header("Authorization", &auth).call(),
        ProfileAction::Show { name } => agent.get(one(name)).header("Authorization", &auth).call(),
        ProfileAction::Update { name, .. } => agent
            .put(one(name))
            .header("Authorization", &auth)
            .send_json(&body),
        ProfileAction::Delete { name, force } => agent
            .delete(format!("{}?force={force}", one(name)))
            .header("Authorization", &auth)
            .call(),
    };
    let mut response = response.with_context(|| format!("cannot reach {base}"))?;
    let status = response.status().as_u16();
    let body: Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{base} answered {status} without a JSON body"))?;
    Ok(admin::Reply { status, body })
}

/// Percent-encodes a path segment (profile names may hold spaces and other characters).
fn percent_encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
