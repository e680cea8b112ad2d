//! `check --connect` against a broker that authenticates devices: mosquitto with a password
//! file, standing in for ThingsBoard's MQTT transport (provisiond itself refuses every
//! device session).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::{agent, closed_port, failed_with, key_secret, start, succeeded};
use crate::TestServer;

/// mosquitto on 127.0.0.1; killed on drop.
struct Broker(Child);

impl Broker {
    /// Accepting only `user`/`password` on `port`.
    fn with_password(dir: &std::path::Path, port: u16, user: &str, password: &str) -> Broker {
        let passwords = dir.join("passwords");
        let made = Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(&passwords)
            .args([user, password])
            .output()
            .expect("mosquitto_passwd runs (Debian: mosquitto)");
        assert!(made.status.success(), "{made:?}");
        Broker::start(
            dir,
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                passwords.display()
            ),
        )
    }

    /// Running `config` (mosquitto.conf lines); returns once it listens: after its "running"
    /// line, which mosquitto logs once every listener is open. ("Opening ... listen socket"
    /// comes before the socket listens, and a client that connected on it was refused when the
    /// machine was busy.)
    fn start(dir: &std::path::Path, config: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        // Run as root if started as root: the files live in a private temporary directory.
        std::fs::write(&conf, format!("user root\n{config}")).unwrap();
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto runs (Debian: mosquitto)");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = Vec::new();
        loop {
            let Some(line) = lines.next() else {
                panic!(
                    "mosquitto stopped before it was running:\n{}",
                    log.join("\n")
                );
            };
            let line = line.unwrap();
            if line.contains(" running") {
                break;
            }
            log.push(line);
        }
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker(child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_connect_reports_what_an_authenticating_broker_says() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let dir = tempfile::tempdir().unwrap();
    let mut vars = key_secret(&key, &secret);
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "brokered"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_CLIENT_ID", "brokered-client"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_USERNAME", "brokered-user"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_PASSWORD", "brokered-password"));
    succeeded(&start(&server, "mqtt", dir.path(), &vars));

    let broker_dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let _broker = Broker::with_password(
        broker_dir.path(),
        port,
        "brokered-user",
        "brokered-password",
    );
    let port = port.to_string();
    let args = ["check", "--connect", "--host", "127.0.0.1", "--port", &port];
    let out = succeeded(&agent(dir.path(), &args, &[]).output().unwrap());
    assert!(out.contains("accepted the stored credentials"), "{out}");

    // Credentials the broker does not know are refused: exit 10.
    let stranger = tempfile::tempdir().unwrap();
    std::fs::write(
        stranger.path().join(".credentials"),
        r#"{"credentialsValue": {"clientId": "x", "userName": "brokered-user", "password": "wrong"}, "credentialsType": "MQTT_BASIC", "status": "SUCCESS"}"#,
    )
    .unwrap();
    let line = failed_with(&agent(stranger.path(), &args, &[]).output().unwrap(), 10);
    assert!(line.contains("refused the stored credentials"), "{line}");
}

#[test]
fn check_connect_presents_the_generated_certificate_over_mutual_tls() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::mqtt::pki::Pki::generate();
    std::fs::copy(&pki.ca, dir.path().join("ca.pem")).unwrap();
    let mut vars = key_secret(&key, &secret);
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "camera"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_CA_CERT_FILENAME", "ca.pem"));
    succeeded(&start(&server, "mqtt", dir.path(), &vars));

    // The broker trusts exactly the device's self-signed certificate, as a ThingsBoard
    // server trusts the certificate it stored, and presents a server certificate signed by
    // the CA the device was given (ca.pem).
    let broker_dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let _broker = Broker::start(
        broker_dir.path(),
        &format!(
            "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            pki.server.cert.display(),
            pki.server.key.display(),
            dir.path().join("cert.pem").display()
        ),
    );
    let port = port.to_string();
    let out = succeeded(
        &agent(
            dir.path(),
            &["check", "--connect", "--host", "127.0.0.1", "--port", &port],
            &[],
        )
        .output()
        .unwrap(),
    );
    assert!(out.contains("accepted the stored credentials"), "{out}");
}
