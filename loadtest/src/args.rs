//! Command-line flags and the small value syntaxes they use (`http:2,mqtt:1`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load-tests a ThingsBoard-compatible device provisioning server (provisiond, ThingsBoard),
/// speaking only the wire protocols.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulates a mass rollout of devices and reports throughput, latency and verification.
    Run(Box<RunArgs>),
    /// BASELINE ONLY: a server on the same frameworks as provisiond (ntex HTTP, ntex-mqtt, a
    /// UDP CoAP loop with coap-lite) that answers every request with one fixed SUCCESS body, with
    /// no engine and no store: the physical limit provisiond is compared with.
    BaselineServer(BaselineArgs),
    /// Checks credentials recorded by earlier runs (`run --told FILE`) against a server: each
    /// must be stored, provisioned and unchanged, and no credentials id may belong to two
    /// devices. For crash tests, where the server was killed during the runs.
    Verify(VerifyArgs),
}

/// Flags of `loadtest verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// HTTP base URL of the server.
    #[arg(long)]
    pub server: String,
    /// Admin API token.
    #[arg(long, env = "PROVISIOND_ADMIN_TOKEN")]
    pub admin_token: String,
    /// More profiles whose devices take part in the one-owner-per-credentials-id check (runs
    /// that told nobody anything, such as an import cut short by a crash).
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Files written by `loadtest run --told`.
    pub told: Vec<PathBuf>,
}

/// Flags of `loadtest baseline-server`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// HTTP port (0: any free port; the bound port is printed).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// MQTT port.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// CoAP (UDP) port.
    #[arg(long, default_value_t = 5683)]
    pub coap_port: u16,
    /// Worker threads of the HTTP and MQTT servers (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

/// Flags of `loadtest run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start provisiond in a child process on 127.0.0.1 with a temporary data directory,
    /// create the profile, run, and stop it.
    #[arg(long, conflicts_with_all = ["embedded_baseline", "server"])]
    pub embedded: bool,
    /// Start the baseline server (`loadtest baseline-server`) in a child process instead.
    #[arg(long, conflicts_with = "server")]
    pub embedded_baseline: bool,
    /// The provisiond binary for --embedded (default: next to this binary, then PATH).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// With --embedded: use this data directory (kept) instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --embedded: an extra argument for `provisiond serve` (repeatable), e.g.
    /// `--server-arg=--sync-writes=false`.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,

    /// HTTP base URL of an external server.
    #[arg(long)]
    pub server: Option<String>,
    /// MQTT address of an external server (default: the HTTP host, port 1883).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// MQTT over TLS address of an external server (default: the HTTP host, port 8883).
    #[arg(long)]
    pub mqtt_tls: Option<String>,
    /// CoAP address of an external server (default: the HTTP host, port 5683).
    #[arg(long)]
    pub coap: Option<String>,
    /// PEM CA certificates to trust for MQTT over TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// TLS server name (default: the host of the MQTT over TLS address).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Admin API token (provisiond) for profile creation, import and verification.
    #[arg(long, env = "LOADTEST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Provision key of an existing profile (else a profile is created through the admin API).
    #[arg(long, requires = "secret")]
    pub key: Option<String>,
    /// Provision secret of an existing profile.
    #[arg(long, requires = "key")]
    pub secret: Option<String>,

    /// Transports and their shares: `http`, `mqtt`, `mqtt5`, `mqtts`, `mqtts5`, `coap`, or a mix
    /// such as `http:2,mqtt:1,coap:1`.
    #[arg(long, default_value = "http", value_parser = parse_transport_mix)]
    pub transport: Mix<Transport>,
    /// MQTT flow: `full` (connect as `provision`, subscribe, publish, wait for the response,
    /// disconnect) or `connect` (connect and disconnect only: for comparing with a plain broker).
    #[arg(long, value_enum, default_value_t = MqttFlow::Full)]
    pub mqtt_flow: MqttFlow,
    /// Requests in flight at most (closed loop: always this many).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Open loop: requests started per second (latency is measured from each request's intended
    /// start, so a slow server cannot hide its queueing: no coordinated omission).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open loop: seconds over which the arrival rate rises linearly from 0 to --rate.
    #[arg(long, requires = "rate", value_parser = parse_seconds)]
    pub ramp: Option<Duration>,
    /// Requests to send at most (a --replay share of them repeats provisioned devices).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub devices: u64,
    /// Stop starting requests after this many seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Seconds at the start whose requests are left out of the latency percentiles: they are
    /// still sent, counted, verified and plotted in the timeline. The start (connections being
    /// opened, cold caches, a queue building while the client itself starts) is not the steady
    /// state a percentile should describe. Must be shorter than --duration.
    #[arg(long, default_value = "0", value_parser = parse_warmup)]
    pub warmup: Duration,
    /// Per-request timeout in seconds.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// `new` (ALLOW_CREATE_NEW_DEVICES) or `preprovisioned` (a generated CSV is imported through
    /// the admin API first, then the fleet provisions).
    #[arg(long, value_enum, default_value_t = Scenario::New)]
    pub scenario: Scenario,
    /// Share (0..1) of requests that repeat a device already provisioned (idempotency).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    pub replay: f64,
    /// Credentials and their shares: `token` (server-generated), `supplied` (device's token),
    /// `basic` (MQTT basic), `x509`, or a mix such as `token:3,basic:1`.
    #[arg(long, default_value = "token", value_parser = parse_credentials_mix)]
    pub credentials: Mix<CredentialsKind>,
    /// Device name prefix (default: `lt` and the start time, so runs do not collide).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Skip the verification against the server's export (e.g. against ThingsBoard).
    #[arg(long)]
    pub no_verify: bool,
    /// Write every credential a device was told here (JSON lines: profile, device, credentials),
    /// as soon as the load ends and before any verification, for `loadtest verify`.
    #[arg(long)]
    pub told: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report (with plots) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Client worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// A wire transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Transport {
    /// HTTP POST /api/v1/provision on a keep-alive connection.
    Http,
    /// MQTT 3.1.1 over TCP.
    Mqtt,
    /// MQTT 5 over TCP.
    Mqtt5,
    /// MQTT 3.1.1 over TLS.
    Mqtts,
    /// MQTT 5 over TLS.
    Mqtts5,
    /// CoAP over UDP, confirmable.
    Coap,
}

impl Transport {
    /// The name used in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Mqtt => "mqtt",
            Transport::Mqtt5 => "mqtt5",
            Transport::Mqtts => "mqtts",
            Transport::Mqtts5 => "mqtts5",
            Transport::Coap => "coap",
        }
    }

    /// Whether it needs the MQTT over TLS listener.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Mqtts | Transport::Mqtts5)
    }
}

/// The MQTT flow of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MqttFlow {
    /// Connect, subscribe, publish, wait for the response, disconnect.
    Full,
    /// Connect and disconnect.
    Connect,
}

/// What the fleet looks like before the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Unknown devices, created on their first request (ALLOW_CREATE_NEW_DEVICES).
    New,
    /// Devices imported first (CHECK_PRE_PROVISIONED_DEVICES).
    Preprovisioned,
}

/// The credentials a device ends up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum CredentialsKind {
    /// An access token the server generates.
    Token,
    /// An access token the device supplies.
    Supplied,
    /// MQTT basic (client id, user name, password).
    Basic,
    /// An X.509 certificate.
    X509,
}

impl CredentialsKind {
    /// The name used in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            CredentialsKind::Token => "token",
            CredentialsKind::Supplied => "supplied",
            CredentialsKind::Basic => "basic",
            CredentialsKind::X509 => "x509",
        }
    }
}

/// Weighted choices, picked deterministically by index (so a run is reproducible).
#[derive(Clone, Debug)]
pub struct Mix<T> {
    /// Each choice with its cumulative weight.
    pub choices: Vec<(T, u32)>,
    total: u32,
}

impl<T: Copy> Mix<T> {
    /// The choice for index `i`: the weights are laid out round-robin over every `total`.
    pub fn pick(&self, i: u64) -> T {
        let slot = (i % u64::from(self.total)) as u32;
        let mut acc = 0;
        for (choice, weight) in &self.choices {
            acc += weight;
            if slot < acc {
                return *choice;
            }
        }
        self.choices[self.choices.len() - 1].0
    }

    /// The choices (with their weights).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.choices.iter().map(|(c, _)| *c)
    }
}

fn parse_mix<T: ValueEnum + Copy + PartialEq>(text: &str) -> anyhow::Result<Mix<T>> {
    let mut choices: Vec<(T, u32)> = Vec::new();
    for part in text.split(',') {
        let (name, weight) = match part.split_once(':') {
            Some((n, w)) => (
                n.trim(),
                w.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
                    .with_context(|| {
                        format!("weight {w:?} of {n:?} is not a whole number from 1 to 1000")
                    })?,
            ),
            None => (part.trim(), 1),
        };
        let choice = T::from_str(name, true).map_err(|_| {
            let known: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            anyhow::anyhow!("unknown choice {name:?} (known: {})", known.join(", "))
        })?;
        if choices.iter().any(|(c, _)| *c == choice) {
            bail!("{name:?} is given twice");
        }
        choices.push((choice, weight));
    }
    let total = choices.iter().map(|(_, w)| w).sum();
    Ok(Mix { choices, total })
}

fn parse_transport_mix(text: &str) -> anyhow::Result<Mix<Transport>> {
    parse_mix(text)
}

fn parse_credentials_mix(text: &str) -> anyhow::Result<Mix<CredentialsKind>> {
    parse_mix(text)
}

fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let rate: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
        bail!("the rate must be above 0 and at most 10,000,000 requests per second");
    }
    Ok(rate)
}

fn parse_warmup(text: &str) -> anyhow::Result<Duration> {
    seconds(text, true)
}

fn parse_seconds(text: &str) -> anyhow::Result<Duration> {
    seconds(text, false)
}

/// A number of seconds up to a day; 0 only where it means "none".
fn seconds(text: &str, zero_allowed: bool) -> anyhow::Result<Duration> {
    let secs: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number of seconds"))?;
    let (low_ok, low) = if zero_allowed {
        (secs >= 0.0, "at least 0")
    } else {
        (secs > 0.0, "above 0")
    };
    if !(secs.is_finite() && low_ok && secs <= 86_400.0) {
        bail!("seconds must be {low} and at most 86400");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_fraction(text: &str) -> anyhow::Result<f64> {
    let f: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(0.0..1.0).contains(&f) {
        bail!("the replay share must be at least 0 and below 1");
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_pick_by_weight() {
        let mix: Mix<Transport> = parse_mix("http:2,coap").unwrap();
        let picks: Vec<_> = (0..6).map(|i| mix.pick(i)).collect();
        assert_eq!(
            picks,
            [
                Transport::Http,
                Transport::Http,
                Transport::Coap,
                Transport::Http,
                Transport::Http,
                Transport::Coap
            ]
        );
        assert!(parse_mix::<Transport>("http:0").is_err());
        assert!(parse_mix::<Transport>("gopher").is_err());
        assert!(parse_mix::<Transport>("http,http").is_err());
    }
}
