//! `provisiond agent` as a device runs it: the real binary, configured by the ThingsBoard
//! gateway's environment variables, against a real provisiond over MQTT, HTTP and CoAP.

mod broker;
mod failures;
mod lifecycle;
mod variables;
mod x509;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::{TestServer, binary};

/// The transports the agent speaks.
pub const TRANSPORTS: [&str; 3] = ["mqtt", "http", "coap"];

/// The server port the agent should use for `transport`.
pub fn port_for(server: &TestServer, transport: &str) -> u16 {
    match transport {
        "mqtt" => server.mqtt_addr().port(),
        "http" => server.addr().port(),
        "coap" => server.coap_addr().port(),
        other => panic!("no transport {other}"),
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    addr.port()
}

/// The agent binary with a clean environment: only `vars`, and the retries kept short.
pub fn agent(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command
        .env_clear()
        .arg("agent")
        .args(args)
        .arg("--config-dir")
        .arg(dir)
        .env("PROVISIOND_AGENT_BACKOFF_MS", "50")
        .env("PROVISIOND_AGENT_BACKOFF_MAX_MS", "400");
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

/// `provisiond agent` for 127.0.0.1:`port` over `transport`, then `extra` arguments.
pub fn agent_to(
    dir: &Path,
    transport: &str,
    port: u16,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> Command {
    let port = port.to_string();
    let mut args = vec![
        "--transport",
        transport,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ];
    args.extend_from_slice(extra);
    agent(dir, &args, vars)
}

/// Runs the agent against `server` over `transport`.
pub fn start(server: &TestServer, transport: &str, dir: &Path, vars: &[(&str, &str)]) -> Output {
    let port = port_for(server, transport);
    agent_to(dir, transport, port, &["--retries", "2"], vars)
        .output()
        .expect("agent runs")
}

/// Standard output and error, for messages.
pub fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts success and returns standard output.
pub fn succeeded(output: &Output) -> String {
    let (out, err) = texts(output);
    assert!(output.status.success(), "agent failed: {err}{out}");
    out
}

/// Asserts exit `code` with one line on standard error, and returns that line.
pub fn failed_with(output: &Output, code: i32) -> String {
    let (out, err) = texts(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout {out} stderr {err}"
    );
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("provisiond agent: "), "{err}");
    last
}

/// The stored `.credentials` text.
pub fn stored_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".credentials")).expect(".credentials written")
}

/// The stored `.credentials`, parsed.
pub fn stored(dir: &Path) -> Value {
    serde_json::from_str(&stored_text(dir)).expect(".credentials is JSON")
}

/// The key and secret variables for a profile.
pub fn key_secret<'a>(key: &'a str, secret: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("TB_GW_PROVISIONING_DEVICE_KEY", key),
        ("TB_GW_PROVISIONING_DEVICE_SECRET", secret),
    ]
}

/// The device name the agent reported provisioning.
pub fn provisioned_name(stdout: &str) -> String {
    let start = stdout.find("provisioned \"").expect("provisioned line") + 13;
    let end = stdout[start..].find('"').unwrap() + start;
    stdout[start..end].to_string()
}
