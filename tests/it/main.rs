//! The one integration-test binary: a real server on 127.0.0.1:0 with a temporary data
//! directory, real sockets, real clients (ureq, curl, coap-client, raw TCP and UDP), real
//! restarts and real kills.

mod admin;
mod agent;
mod bulk;
mod cli;
mod coap;
mod deploy;
mod disk_full;

mod http;
mod idempotency;
mod metrics;
mod mqtt;
mod overload;
mod restart;
mod security;
mod throttle;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use provisiond::config::{Config, Overrides};
use provisiond::server::{self, RunningServer};
use serde_json::{Value, json};

/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A real provisiond in this process.
pub struct TestServer {
    dir: tempfile::TempDir,
    config: Config,
    running: Option<RunningServer>,
    agent: ureq::Agent,
}

impl TestServer {
    /// Starts with 4 shards (so that cross-shard claims happen) on a fresh data directory.
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// Starts after `adjust` has changed the test configuration.
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let running = server::start(&config, false).expect("server starts");
        TestServer {
            dir,
            config,
            running: Some(running),
            agent: agent(),
        }
    }

    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").http_addr()
    }

    /// The CoAP (UDP) address.
    pub fn coap_addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").coap_addr()
    }

    /// The plain MQTT address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").mqtt_addr()
    }

    /// The MQTT over TLS address (the test must have configured a certificate).
    pub fn mqtt_tls_addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .expect("running")
            .mqtt_tls_addr()
            .expect("TLS listener configured")
    }

    /// Stops gracefully from another thread, returning its handle (to watch what clients see
    /// while the server stops).
    pub fn stop_in_background(mut self) -> std::thread::JoinHandle<()> {
        let running = self.running.take().expect("running");
        std::thread::spawn(move || {
            running.stop().expect("clean stop");
            drop(self);
        })
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Stops gracefully and starts again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.running
            .take()
            .expect("running")
            .stop()
            .expect("clean stop");
        self.running = Some(server::start(&self.config, false).expect("server restarts"));
    }

    /// Stops gracefully.
    pub fn stop(mut self) {
        self.running
            .take()
            .expect("running")
            .stop()
            .expect("clean stop");
    }

    /// POSTs a raw body to /api/v1/provision; returns status and body text.
    pub fn provision_raw(&self, body: &[u8]) -> (u16, String) {
        let mut response = self
            .agent
            .post(self.url("/api/v1/provision"))
            .header("Content-Type", "application/json")
            .send(body)
            .expect("request goes through");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().expect("text body"),
        )
    }

    /// POSTs a JSON request; returns status and parsed body.
    pub fn provision(&self, request: &Value) -> (u16, Value) {
        let (status, body) = self.provision_raw(request.to_string().as_bytes());
        (status, serde_json::from_str(&body).expect("JSON body"))
    }

    /// Calls the admin API with the test token.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        admin_call(
            &self.agent,
            &self.url(path),
            method,
            Some(ADMIN_TOKEN),
            body,
        )
    }

    /// Creates a profile and returns (key, secret).
    pub fn profile(&self, name: &str, strategy: &str, policy: &str) -> (String, String) {
        let (status, body) = self.admin(
            "POST",
            "/api/admin/profiles",
            Some(json!({ "name": name, "strategy": strategy, "reprovisionPolicy": policy })),
        );
        assert_eq!(status, 201, "{body}");
        (
            body["provisionDeviceKey"].as_str().unwrap().to_string(),
            body["provisionDeviceSecret"].as_str().unwrap().to_string(),
        )
    }

    /// The admin view of a device, or None.
    pub fn device(&self, name: &str) -> Option<Value> {
        let (status, body) =
            self.admin("GET", &format!("/api/admin/devices/{}", encode(name)), None);
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("GET device answered {other}: {body}"),
        }
    }

    /// Every device name of a profile, through the paged admin listing.
    pub fn device_names(&self, profile: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, body) = self.admin(
                "GET",
                &format!(
                    "/api/admin/devices?profile={}&limit=1000&cursor={cursor}",
                    encode(profile)
                ),
                None,
            );
            assert_eq!(status, 200, "{body}");
            for d in body["devices"].as_array().unwrap() {
                names.push(d["name"].as_str().unwrap().to_string());
            }
            match body["nextCursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => return names,
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop();
        }
        let _ = &self.dir;
    }
}

/// The test configuration: every port ephemeral on 127.0.0.1, 4 shards, data under `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::load(None, &Overrides::default()).expect("defaults load");
    config.data_dir = dir.join("data");
    config.bind = "127.0.0.1".parse().unwrap();
    config.http.port = 0;
    config.http.workers = 2;
    config.mqtt.port = 0;
    config.mqtt.tls_port = 0;
    config.mqtt.workers = 2;
    config.coap.port = 0;
    config.engine.shards = 4;
    config.admin_token = Some(ADMIN_TOKEN.into());
    config
}

/// An HTTP agent that returns error statuses instead of failing.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One admin call.
pub fn admin_call(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("GET", _) => with_auth(agent.get(url), &auth).call(),
        ("DELETE", _) => with_auth(agent.delete(url), &auth).call(),
        ("POST", Some(b)) => with_auth(agent.post(url), &auth).send_json(&b),
        ("POST", None) => with_auth(agent.post(url), &auth).send_empty(),
        ("PUT", Some(b)) => with_auth(agent.put(url), &auth).send_json(&b),
        (m, _) => panic!("unsupported method {m}"),
    };
    let mut response = response.expect("admin request goes through");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("text body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A provisioning request for `name` with the given key and secret.
pub fn request(key: &str, secret: &str, name: &str) -> Value {
    json!({ "provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": name })
}

/// The provisiond binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_provisiond"))
}

/// provisiond running as a child process (for kills and CLI behaviour).
pub struct ServerProcess {
    /// The child.
    pub child: Child,
    /// Its HTTP address, read from its start-up line.
    pub addr: SocketAddr,
    /// Its MQTT address, read from the line after.
    pub mqtt_addr: SocketAddr,
    /// Its CoAP address, read from a later line.
    pub coap_addr: SocketAddr,
}

/// `provisiond serve` on `data_dir`, 127.0.0.1, ephemeral ports, 4 shards, the test admin token,
/// warnings only on standard error (discarded) and the start-up lines on a piped standard output.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(binary());
    command
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
            "--coap-port",
            "0",
            "--shards",
            "4",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("PROVISIOND_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

impl ServerProcess {
    /// Starts `provisiond serve` on `data_dir` with an ephemeral port and waits until it serves.
    pub fn start(data_dir: &Path) -> ServerProcess {
        ServerProcess::start_with(data_dir, |_| {})
    }

    /// As [`ServerProcess::start`], with `adjust` changing the command last (environment,
    /// where standard error goes).
    pub fn start_with(data_dir: &Path, adjust: impl FnOnce(&mut Command)) -> ServerProcess {
        let mut command = serve_command(data_dir);
        adjust(&mut command);
        let mut child = command.spawn().expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            assert!(
                Instant::now() < deadline,
                "server did not report its address"
            );
            let line = lines.next().expect("server printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("provisiond: serving HTTP on ") {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.parse().unwrap();
            }
        };
        let line = lines
            .next()
            .expect("server printed its MQTT address")
            .unwrap();
        let mqtt_addr = line
            .strip_prefix("provisiond: serving MQTT on ")
            .unwrap_or_else(|| panic!("the MQTT line follows the HTTP line, got {line:?}"))
            .parse()
            .unwrap();
        // Other transports may print their lines in between; the CoAP line comes after HTTP's.
        let coap_addr = loop {
            assert!(
                Instant::now() < deadline,
                "server did not report its CoAP address"
            );
            let line = lines
                .next()
                .expect("server printed its CoAP address")
                .unwrap();
            if let Some(rest) = line.strip_prefix("provisiond: serving CoAP on ") {
                break rest.trim().parse().unwrap();
            }
        };
        ServerProcess {
            child,
            addr,
            mqtt_addr,
            coap_addr,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}
