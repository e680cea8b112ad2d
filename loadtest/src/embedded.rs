//! `--embedded`: provisiond (or the baseline server) in a child process on 127.0.0.1 with
//! ephemeral ports and a temporary data directory; its addresses are read from the lines it
//! prints at start (`provisiond: serving HTTP on ADDR ...`), and it is stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the child may take to print its addresses.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A running child server.
#[derive(Debug)]
pub struct Embedded {
    child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// MQTT over TLS address, when a certificate was configured.
    pub mqtt_tls: Option<SocketAddr>,
    /// CoAP address.
    pub coap: SocketAddr,
    /// The admin token it was started with.
    pub admin_token: String,
    /// PEM of the certificate its TLS listener presents (to trust).
    pub tls_cert_pem: Option<String>,
    /// provisiond stops gracefully on SIGTERM; the stateless baseline is simply killed.
    graceful: bool,
    _dir: tempfile::TempDir,
}

impl Embedded {
    /// Starts provisiond from `bin`; `tls` configures a self-signed certificate for
    /// `localhost`/127.0.0.1 and the TLS listener.
    pub fn provisiond(
        bin: &Path,
        data_dir: Option<&Path>,
        tls: bool,
        extra: &[String],
    ) -> anyhow::Result<Embedded> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let data = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("data"));
        let admin_token = format!("loadtest-{:032x}", rand::random::<u128>());
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
        ])
        .args(["--coap-port", "0", "--data-dir"])
        .arg(&data)
        .env("PROVISIOND_ADMIN_TOKEN", &admin_token)
        .env("RUST_LOG", "warn");
        let mut tls_cert_pem = None;
        if tls {
            let cert = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])?;
            let cert_file = dir.path().join("server.pem");
            let key_file = dir.path().join("server.key");
            std::fs::write(&cert_file, cert.cert.pem())?;
            std::fs::write(&key_file, cert.signing_key.serialize_pem())?;
            let config = dir.path().join("provisiond.toml");
            std::fs::write(
                &config,
                format!(
                    "[mqtt]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
                    cert_file.display().to_string(),
                    key_file.display().to_string()
                ),
            )?;
            cmd.arg("--config")
                .arg(config)
                .args(["--mqtt-tls-port", "0"]);
            tls_cert_pem = Some(cert.cert.pem());
        }
        cmd.args(extra);
        let mut e = Embedded::spawn(cmd, dir, admin_token)?;
        e.tls_cert_pem = tls_cert_pem;
        if tls && e.mqtt_tls.is_none() {
            bail!("provisiond did not report its MQTT over TLS address");
        }
        Ok(e)
    }

    /// Starts `loadtest baseline-server` (this very binary).
    pub fn baseline() -> anyhow::Result<Embedded> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let mut cmd = Command::new(std::env::current_exe().context("cannot find this binary")?);
        cmd.args([
            "baseline-server",
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
            "--coap-port",
            "0",
        ]);
        let mut e = Embedded::spawn(cmd, dir, String::new())?;
        e.graceful = false;
        Ok(e)
    }

    fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        admin_token: String,
    ) -> anyhow::Result<Embedded> {
        let program = cmd.get_program().to_string_lossy().to_string();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the start-up lines, then keeps draining so that the child never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let (mut http, mut mqtt, mut mqtt_tls) = (None, None, None);
        let coap = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    bail!(
                        "{program} did not report its addresses (exit: {status:?}); its errors are above"
                    );
                }
            };
            let Some(rest) = line.strip_prefix("provisiond: serving ") else {
                continue;
            };
            let addr = |s: &str| -> anyhow::Result<SocketAddr> {
                s.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("unreadable address in {line:?}"))
            };
            if let Some(a) = rest.strip_prefix("HTTP on ") {
                http = Some(addr(a)?);
            } else if let Some(a) = rest.strip_prefix("MQTT over TLS on ") {
                mqtt_tls = Some(addr(a)?);
            } else if let Some(a) = rest.strip_prefix("MQTT on ") {
                mqtt = Some(addr(a)?);
            } else if let Some(a) = rest.strip_prefix("CoAP on ") {
                break addr(a)?;
            }
        };
        let (Some(http), Some(mqtt)) = (http, mqtt) else {
            let _ = child.kill();
            bail!("{program} did not report its HTTP and MQTT addresses before CoAP's");
        };
        Ok(Embedded {
            child,
            http,
            mqtt,
            mqtt_tls,
            coap,
            admin_token,
            tls_cert_pem: None,
            graceful: true,
            _dir: dir,
        })
    }

    /// The child's peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Its current resident memory (VmRSS), in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Stops it with SIGTERM (SIGKILL after the deadline); errors if it did not exit cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if !self.graceful {
            self.child.kill()?;
            self.child.wait()?;
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).context("pid")?;
        // The `kill` command: this crate forbids unsafe code, so no libc call.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server did not stop within {STOP_DEADLINE:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The provisiond binary: `--server-bin`, else next to this binary, else on the PATH.
pub fn find_provisiond(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--server-bin {} is not a file", p.display());
    }
    if let Ok(me) = std::env::current_exe() {
        // target/release/loadtest, or target/release/deps/<test> for the tests.
        for dir in me.ancestors().skip(1).take(2) {
            let candidate = dir.join("provisiond");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("provisiond"))
        .find(|p| p.is_file())
        .context("provisiond not found next to loadtest nor on the PATH; build it (cargo build --release) or give --server-bin")
}
