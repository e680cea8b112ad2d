//! The provisiond command line: `serve`, `profile …`, `import`, `export`, `agent`, `config`. A thin edge:
//! parse flags, load the configuration, call the library, print one line naming any failure and
//! exit non-zero.

mod cli;
mod cpu_check;
mod native_heap;

/// mimalloc instead of glibc malloc: per-thread free lists suit the request path, where one
/// thread allocates a request and another (a shard, a worker) frees it. glibc's malloc and free
/// were 9-11% of the server's CPU under load in perf profiles (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use cli::agent::AgentArgs;
use cli::bulk::{ExportArgs, ImportArgs};
use cli::profile::ProfileAction;
use cli::{Settings, Target, load};
use provisiond::config::{Config, LogFormat};
use provisiond::server;

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
    /// Run the provisioning server (HTTP, MQTT and CoAP provisioning, admin API, metrics).
    Serve(Settings),
    /// Create, list, show, update and delete device profiles.
    Profile {
        #[command(subcommand)]
        action: ProfileAction,
        #[command(flatten)]
        target: Target,
    },
    /// Import devices from a CSV file (ThingsBoard's bulk-provisioning columns).
    Import(ImportArgs),
    /// Export devices as CSV, credentials and provisionState included.
    Export(ExportArgs),
    /// The device side: provision on first start like the ThingsBoard IoT Gateway, keep the
    /// credentials in <config dir>/.credentials; `reset` forgets them, `check` shows them.
    Agent(AgentArgs),
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

/// The CPU check runs as the program's first static initializer (priority 101; std's own is
/// 99), before `main` and before RocksDB's C++ initializers: compiled with SSE4.1, those stop a
/// CPU without it with SIGILL before `main` could say why.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[used]
#[unsafe(link_section = ".init_array.00101")]
static CHECK_CPU_FIRST: extern "C" fn() = {
    extern "C" fn check_cpu_first() {
        if !cpu_check::check_and_report() {
            // Nothing else is initialized yet, so nothing is left to run or flush.
            unsafe { libc::_exit(1) }
        }
    }
    check_cpu_first
};

fn main() -> ExitCode {
    // Before any thread starts: RocksDB's freed memtables go back to the kernel (see the module).
    native_heap::bound_native_heap();
    let cli = Cli::parse();
    // The agent has its own exit codes, one per cause.
    let cli = match cli.command {
        Command::Agent(args) => return cli::agent::run(args),
        command => Cli { command },
    };
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
        Command::Profile { action, target } => cli::profile::run(action, target),
        Command::Import(args) => cli::bulk::import(args),
        Command::Export(args) => cli::bulk::export(args),
        Command::Agent(_) => unreachable!("main runs the agent itself"),
        Command::Config {
            default,
            effective,
            settings,
        } => {
            if default || !effective {
                print!("{}", provisiond::config::DEFAULT_TOML);
            } else {
                println!("{:#?}", load(&settings)?);
            }
            Ok(())
        }
    }
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
    println!("provisiond: serving CoAP on {}", running.coap_addr());
    running.wait()?;
    Ok(())
}
