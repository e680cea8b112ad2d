//! The command-line clients of the Debian package mosquitto-clients, run exactly as
//! `seeds/mqtt-provisioning-api.txt` shows them, over TCP and TLS, for MQTT 3.1.1 and 5.
//! `mosquitto_rr` is the one-connection form that receives the answer; the seed's two-process
//! `mosquitto_sub` + `mosquitto_pub` pair must not leak one session's credentials to another.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::client::READ_DEADLINE;
use super::pki::Pki;
use super::{Fixture, token_body};

/// Where a mosquitto client connects, and how.
struct Target<'a> {
    addr: SocketAddr,
    /// `--cafile` for TLS.
    ca: Option<&'a Path>,
    /// `--cert`/`--key` for a client certificate.
    identity: Option<(&'a Path, &'a Path)>,
}

impl Target<'_> {
    fn args(&self, version: &str) -> Vec<String> {
        let mut args = vec![
            "-V".to_string(),
            version.to_string(),
            "-h".into(),
            self.addr.ip().to_string(),
            "-p".into(),
            self.addr.port().to_string(),
        ];
        if let Some(ca) = self.ca {
            args.extend(["--cafile".into(), ca.display().to_string()]);
        }
        if let Some((cert, key)) = self.identity {
            args.extend(["--cert".into(), cert.display().to_string()]);
            args.extend(["--key".into(), key.display().to_string()]);
        }
        args
    }
}

/// `mosquitto_rr -u provision -t /provision/request -e /provision/response -m '…'`.
fn mosquitto_rr(target: &Target<'_>, version: &str, message: &str) -> Output {
    Command::new("mosquitto_rr")
        .args(target.args(version))
        .args([
            "-u",
            "provision",
            "-t",
            "/provision/request",
            "-e",
            "/provision/response",
        ])
        .args(["-m", message, "-W", "20"])
        .output()
        .expect("mosquitto_rr runs (Debian package mosquitto-clients)")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "mosquitto client failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

#[test]
fn mosquitto_rr_provisions_over_tcp_and_tls_on_both_versions() {
    let pki = Pki::generate();
    let f = Fixture::start_with(|c| pki.configure(c));
    let targets = [
        (
            "tcp",
            Target {
                addr: f.addr(),
                ca: None,
                identity: None,
            },
        ),
        (
            "tls",
            Target {
                addr: f.server.mqtt_tls_addr(),
                ca: Some(&pki.ca),
                identity: None,
            },
        ),
    ];
    for (transport, target) in &targets {
        for version in ["mqttv311", "mqttv5"] {
            let name = format!("rr-{transport}-{version}");
            let token = format!("token-{transport}-{version}");
            let message = format!(
                r#"{{"deviceName": "{name}", "provisionDeviceKey": "{}", "provisionDeviceSecret": "{}", "credentialsType": "ACCESS_TOKEN", "token": "{token}"}}"#,
                f.key, f.secret
            );
            let reply = stdout(&mosquitto_rr(target, version, &message));
            assert_eq!(reply, token_body(&token), "{transport} {version}");
            // The documented request without credentials gets a generated token.
            let message = format!(
                r#"{{"deviceName": "{name}-gen", "provisionDeviceKey": "{}", "provisionDeviceSecret": "{}"}}"#,
                f.key, f.secret
            );
            let reply: serde_json::Value =
                serde_json::from_str(&stdout(&mosquitto_rr(target, version, &message))).unwrap();
            assert_eq!(reply["status"], "SUCCESS");
            assert_eq!(reply["credentialsType"], "ACCESS_TOKEN");
        }
    }
    // Wrong secret: the documented failure shape, ThingsBoard's real text.
    let message = format!(
        r#"{{"deviceName": "x", "provisionDeviceKey": "{}", "provisionDeviceSecret": "wrong"}}"#,
        f.key
    );
    let reply = stdout(&mosquitto_rr(&targets[0].1, "mqttv5", &message));
    assert_eq!(reply, super::NOT_FOUND);
}

#[test]
fn the_seed_commands_provision_and_never_deliver_credentials_to_another_session() {
    let pki = Pki::generate();
    let f = Fixture::start_with(|c| pki.configure(c));
    let targets = [
        Target {
            addr: f.addr(),
            ca: None,
            identity: None,
        },
        Target {
            addr: f.server.mqtt_tls_addr(),
            ca: Some(&pki.ca),
            identity: None,
        },
    ];
    for (n, target) in targets.iter().enumerate() {
        for version in ["mqttv311", "mqttv5"] {
            // mosquitto_sub -d -q 1 -h "$THINGSBOARD_HOST" -p 1883 -t "/provision/response" -u "provision"
            // stdbuf: mosquitto's debug lines are block-buffered on a pipe otherwise, and a
            // killed subscriber would take what it saw with it.
            let mut sub = KillOnDrop(
                Command::new("stdbuf")
                    .args(["-oL", "mosquitto_sub", "-d", "-q", "1"])
                    .args(target.args(version))
                    .args(["-t", "/provision/response", "-u", "provision"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mosquitto_sub runs"),
            );
            let lines = BufReader::new(sub.0.stdout.take().expect("stdout")).lines();
            let (tx, rx) = mpsc::channel();
            let reader = std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            wait_for_line(&rx, "received SUBACK");

            // mosquitto_pub -d -q 1 -h "$THINGSBOARD_HOST" -p 1883 -t "/provision/request" -u "provision" -m '{…}'
            let name = format!("seed-{n}-{version}");
            let message = format!(
                r#"{{"deviceName": "{name}", "provisionDeviceKey": "{}", "provisionDeviceSecret": "{}"}}"#,
                f.key, f.secret
            );
            let output = Command::new("mosquitto_pub")
                .args(["-d", "-q", "1"])
                .args(target.args(version))
                .args([
                    "-t",
                    "/provision/request",
                    "-u",
                    "provision",
                    "-m",
                    &message,
                ])
                .output()
                .expect("mosquitto_pub runs");
            let log = stdout(&output);
            assert!(log.contains("received PUBACK"), "{log}");
            let device = f
                .server
                .device(&name)
                .expect("the seed's request provisions");
            let token = device["credentialsValue"].as_str().unwrap().to_string();

            // Another session asks and is answered on its own connection only.
            let other = format!(
                r#"{{"deviceName": "{name}-rr", "provisionDeviceKey": "{}", "provisionDeviceSecret": "{}"}}"#,
                f.key, f.secret
            );
            let reply = stdout(&mosquitto_rr(target, version, &other));
            assert!(reply.contains("SUCCESS"), "{reply}");

            // Both answers have been published by now; the subscriber saw neither.
            drop(sub);
            reader.join().expect("reader thread");
            let seen: Vec<String> = rx.try_iter().collect();
            assert!(
                seen.iter()
                    .all(|l| !l.contains("PUBLISH") && !l.contains(&token)),
                "the subscriber received another session's response: {seen:?}"
            );
        }
    }
}

#[test]
fn mosquitto_presents_a_client_certificate_when_the_server_requires_one() {
    let pki = Pki::generate();
    let f = Fixture::start_with(|c| {
        pki.configure(c);
        c.mqtt.tls_client_ca_file = Some(pki.ca.clone());
        c.mqtt.tls_client_cert_required = true;
    });
    let message = format!(
        r#"{{"deviceName": "with-cert", "provisionDeviceKey": "{}", "provisionDeviceSecret": "{}"}}"#,
        f.key, f.secret
    );
    let with_cert = Target {
        addr: f.server.mqtt_tls_addr(),
        ca: Some(&pki.ca),
        identity: Some((&pki.client.cert, &pki.client.key)),
    };
    let reply = stdout(&mosquitto_rr(&with_cert, "mqttv311", &message));
    assert!(reply.contains("SUCCESS"), "{reply}");
    let without = Target {
        identity: None,
        ..with_cert
    };
    let output = mosquitto_rr(
        &without,
        "mqttv311",
        &message.replace("with-cert", "no-cert"),
    );
    assert!(
        !output.status.success(),
        "a client without a certificate is refused"
    );
    assert!(f.server.device("no-cert").is_none());
}

/// A child process that is killed (by its own pid) and reaped when dropped, also when the test
/// fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + READ_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(_) => panic!("mosquitto_sub never printed {needle:?}"),
        }
    }
}
