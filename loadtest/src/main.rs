//! `loadtest`: simulates a mass rollout of devices against a ThingsBoard-compatible
//! provisioning server over its wire protocols only, and the baseline server it is compared with.

#![forbid(unsafe_code)]

mod admin;
mod args;
mod baseline;
mod client;
#[path = "../../src/cpu_check.rs"]
mod cpu_check;
mod embedded;
mod fleet;
mod html;
mod ledger;
mod report;
mod run;
mod stats;
mod told;

use clap::Parser;

fn main() {
    if !cpu_check::check_and_report() {
        std::process::exit(2);
    }
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Run(run_args) => run::run(*run_args),
        args::Command::BaselineServer(b) => baseline::serve(&b).map(|()| 0),
        args::Command::Verify(v) => told::verify(&v),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            std::process::exit(2);
        }
    }
}
