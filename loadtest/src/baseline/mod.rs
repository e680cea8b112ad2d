//! BASELINE ONLY, not a provisioning server: the same frameworks as provisiond (ntex HTTP,
//! ntex-mqtt, a UDP CoAP loop with coap-lite) answering every provisioning request with one fixed
//! SUCCESS body, with no engine, no store, no parsing of the request. What it serves is the
//! physical limit of the transports on this machine; BENCHMARKS.md divides provisiond's
//! throughput by it.

mod coap;
mod http;
mod mqtt;

use std::net::{SocketAddr, TcpListener, UdpSocket};

use anyhow::Context;

use crate::args::BaselineArgs;

/// The one answer, shaped like provisiond's (SPEC §3).
pub const FIXED_RESPONSE: &str = r#"{"credentialsValue":"baselineToken0000000","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#;

/// Binds, prints the addresses the way provisiond does, and serves until killed.
pub fn serve(args: &BaselineArgs) -> anyhow::Result<()> {
    let workers = if args.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        args.workers
    };
    let http = TcpListener::bind(SocketAddr::new(args.bind, args.http_port))
        .context("cannot bind HTTP")?;
    let mqtt = TcpListener::bind(SocketAddr::new(args.bind, args.mqtt_port))
        .context("cannot bind MQTT")?;
    let coap =
        UdpSocket::bind(SocketAddr::new(args.bind, args.coap_port)).context("cannot bind CoAP")?;
    println!(
        "provisiond: serving HTTP on {} (BASELINE: fixed answers, no engine, no store)",
        http.local_addr()?
    );
    println!("provisiond: serving MQTT on {}", mqtt.local_addr()?);
    println!("provisiond: serving CoAP on {}", coap.local_addr()?);
    let coap_thread = coap::spawn(coap, workers)?;
    ntex::rt::System::build()
        .name("baseline")
        .build(ntex::rt::DefaultRuntime)
        .block_on(async move {
            let http = http::serve(http, workers)?;
            let mqtt = mqtt::serve(mqtt, workers)?;
            // Runs until SIGTERM / Ctrl-C (ntex's signal handling stops both servers).
            let _ = ntex::util::join(http, mqtt).await;
            Ok::<_, anyhow::Error>(())
        })?;
    drop(coap_thread);
    Ok(())
}
