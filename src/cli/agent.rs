//! `provisiond agent [reset|check]`: the device side, configured as the ThingsBoard gateway is
//! (environment variables), with flags for what the gateway leaves implicit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use provisiond::agent::env::Environment;
use provisiond::agent::error::AgentError;
use provisiond::agent::retry::Backoff;
use provisiond::agent::transport::Kind;
use provisiond::agent::{self, Reach, Started, store};

/// The agent's flags.
#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    /// Transport to provision over.
    #[arg(long, value_enum, default_value = "mqtt", global = true)]
    transport: TransportArg,
    /// Config directory (default: TB_GW_CONFIG_DIR, else /etc/thingsboard-gateway/config/).
    #[arg(long, global = true)]
    config_dir: Option<PathBuf>,
    /// Server host (default: TB_GW_HOST, else host, else localhost).
    #[arg(long, global = true)]
    host: Option<String>,
    /// Server port (default: TB_GW_PORT, else port, else 1883 / 8080 / 5683 by transport).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// MQTT over TLS (implied by port 8883, as in the gateway).
    #[arg(long, global = true)]
    tls: bool,
    /// CA certificate (PEM) to check the server's TLS certificate with; without it, and
    /// without the X.509 CA file in the config directory, the server is not checked.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// One attempt only, no retries.
    #[arg(long)]
    once: bool,
    /// Retries after a failed attempt (server unreachable or silent).
    #[arg(long, default_value_t = 8, env = "PROVISIOND_AGENT_RETRIES")]
    retries: u32,
    /// First backoff delay ceiling in milliseconds; doubles per retry, with jitter.
    #[arg(long, default_value_t = 2000, env = "PROVISIOND_AGENT_BACKOFF_MS")]
    backoff_ms: u64,
    /// Longest backoff delay in milliseconds.
    #[arg(
        long,
        default_value_t = 120_000,
        env = "PROVISIOND_AGENT_BACKOFF_MAX_MS"
    )]
    backoff_max_ms: u64,
    /// Bound on one attempt (connect, send, answer) in seconds.
    #[arg(long, default_value_t = 20, global = true)]
    timeout_s: u64,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Remove the stored credentials, so that the next start provisions again.
    Reset,
    /// Show the stored credentials; with --connect, CONNECT with them over MQTT.
    Check {
        /// CONNECT to the MQTT server with the stored credentials and report the CONNACK
        /// (a ThingsBoard-style broker; provisiond itself serves provisioning only).
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Mqtt,
    Http,
    Coap,
}

/// Runs the agent; the exit code names the outcome (README.md lists them).
pub fn run(args: AgentArgs) -> ExitCode {
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("provisiond agent: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn execute(args: AgentArgs) -> Result<(), AgentError> {
    let env = Environment::new(|name: &str| std::env::var(name).ok());
    let dir = args.config_dir.clone().unwrap_or_else(|| env.config_dir());
    match args.action {
        Some(AgentAction::Reset) => {
            if agent::reset(&dir)? {
                println!(
                    "provisiond agent: removed {}; the next start provisions again",
                    store::path(&dir).display()
                );
            } else {
                println!(
                    "provisiond agent: no stored credentials in {}; nothing to remove",
                    store::path(&dir).display()
                );
            }
            Ok(())
        }
        Some(AgentAction::Check { connect }) => {
            let reach = if connect {
                Some(reach(&args, &env)?)
            } else {
                None
            };
            let checked = agent::check::run(&dir, reach.as_ref())?;
            println!(
                "provisiond agent: stored in {}: {}",
                store::path(&dir).display(),
                checked.stored.describe()
            );
            for note in &checked.notes {
                println!("provisiond agent: {note}");
            }
            if let Some(reach) = reach {
                println!(
                    "provisiond agent: {}:{} accepted the stored credentials (CONNACK 0)",
                    reach.host, reach.port
                );
            }
            Ok(())
        }
        None => {
            let reach = reach(&args, &env)?;
            let started = agent::start(&dir, env.provisioning(), &reach, |line| {
                eprintln!("provisiond agent: {line}")
            })?;
            match started {
                Started::UsedStored(stored) => println!(
                    "provisiond agent: using stored credentials from {}: {}",
                    store::path(&dir).display(),
                    stored.describe()
                ),
                Started::Provisioned {
                    device_name,
                    stored,
                } => println!(
                    "provisiond agent: provisioned {device_name:?}: {}, stored in {}",
                    stored.describe(),
                    store::path(&dir).display()
                ),
            }
            Ok(())
        }
    }
}

fn reach<F: Fn(&str) -> Option<String>>(
    args: &AgentArgs,
    env: &Environment<F>,
) -> Result<Reach, AgentError> {
    let kind = match args.transport {
        TransportArg::Mqtt => Kind::Mqtt,
        TransportArg::Http => Kind::Http,
        TransportArg::Coap => Kind::Coap,
    };
    let port = match args.port {
        Some(port) => port,
        None => env.port()?.unwrap_or(kind.default_port()),
    };
    if args.timeout_s == 0 {
        return Err(AgentError::NotConfigured(
            "--timeout-s must be at least 1".into(),
        ));
    }
    Ok(Reach {
        kind,
        host: args
            .host
            .clone()
            .or_else(|| env.host())
            .unwrap_or_else(|| "localhost".into()),
        port,
        tls: args.tls || (kind == Kind::Mqtt && port == 8883),
        ca_file: args.ca_file.clone(),
        timeout: Duration::from_secs(args.timeout_s),
        backoff: Backoff {
            retries: if args.once { 0 } else { args.retries },
            base: Duration::from_millis(args.backoff_ms),
            max: Duration::from_millis(args.backoff_max_ms.max(args.backoff_ms)),
        },
    })
}
