//! The X.509 identity the agent makes: OpenSSL reads the certificate and the traditional EC
//! key, the key matches the certificate, the server's credentials id is SHA3-256 of the
//! stripped PEM; and provisioning over TLS, with and without checking the server.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use sha3::Digest as _;

use super::{agent, failed_with, key_secret, start, stored, succeeded};
use crate::TestServer;
use crate::mqtt::pki::Pki;

fn openssl(args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn x509_vars<'a>(key: &'a str, secret: &'a str, name: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut vars = key_secret(key, secret);
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", name));
    vars.push(("TB_GW_PROVISIONING_DEVICE_CA_CERT_FILENAME", "ca.pem"));
    vars
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_string()
}

#[test]
fn the_generated_certificate_parses_matches_its_key_and_is_the_servers_credentials_id() {
    let server = TestServer::start();
    let (key, secret) = server.profile("x509", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let dir = tempfile::tempdir().unwrap();
    succeeded(&start(
        &server,
        "mqtt",
        dir.path(),
        &x509_vars(&key, &secret, "cam-1"),
    ));
    let (cert, key_file) = (path(dir.path(), "cert.pem"), path(dir.path(), "key.pem"));

    let text = openssl(&["x509", "-in", &cert, "-noout", "-text"]).replace(" = ", "=");
    assert!(text.contains("Subject: CN=localhost"), "{text}");
    assert!(text.contains("Issuer: CN=localhost"), "{text}");
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    let key_pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "{key_pem}"
    );
    openssl(&["ec", "-in", &key_file, "-check", "-noout"]);
    assert_eq!(
        openssl(&["x509", "-in", &cert, "-noout", "-pubkey"]),
        openssl(&["pkey", "-in", &key_file, "-pubout"]),
        "the key belongs to the certificate"
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let pem = std::fs::read_to_string(&cert).unwrap();
    let value: String = pem
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .replace(['\r', '\n'], "");
    let device = server.device("cam-1").unwrap();
    assert_eq!(device["credentialsType"], "X509_CERTIFICATE");
    assert_eq!(device["credentialsValue"], value.as_str());
    assert_eq!(
        device["credentialsId"],
        hex::encode(sha3::Sha3_256::digest(value.as_bytes()))
    );
    assert_eq!(stored(dir.path())["credentialsValue"], value.as_str());

    // check reads the pair back.
    let out = succeeded(&agent(dir.path(), &["check"], &[]).output().unwrap());
    assert!(
        out.contains("X509_CERTIFICATE") && out.contains("the key matches"),
        "{out}"
    );

    // Another key in key.pem: check says the pair is broken.
    openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        &key_file,
    ]);
    let line = failed_with(&agent(dir.path(), &["check"], &[]).output().unwrap(), 4);
    assert!(line.contains("does not belong to"), "{line}");
}

#[test]
fn provisioning_over_tls_checks_the_server_when_a_ca_is_at_hand() {
    let pki = Pki::generate();
    let server = TestServer::start_with(|c| pki.configure(c));
    let (key, secret) = server.profile("tls", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let port = server.mqtt_tls_addr().port().to_string();
    let tls_args = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "--retries",
        "0",
    ];

    // The CA named by the variable, in the config directory, checks the server.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&pki.ca, dir.path().join("ca.pem")).unwrap();
    succeeded(
        &agent(dir.path(), &tls_args, &x509_vars(&key, &secret, "tls-1"))
            .output()
            .unwrap(),
    );
    assert_eq!(stored(dir.path())["caCert"], "ca.pem");

    // Without a CA file the server is not checked, as the gateway does when provisioning.
    let dir = tempfile::tempdir().unwrap();
    let mut vars = key_secret(&key, &secret);
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "tls-2"));
    succeeded(&agent(dir.path(), &tls_args, &vars).output().unwrap());
    assert_eq!(stored(dir.path())["credentialsType"], "ACCESS_TOKEN");

    // A CA that did not sign the server's certificate: the handshake fails, nothing stored.
    let dir = tempfile::tempdir().unwrap();
    let other = Pki::generate();
    let mut args = tls_args.to_vec();
    let ca = other.ca.to_str().unwrap().to_string();
    args.extend(["--ca-file", &ca]);
    let line = failed_with(&agent(dir.path(), &args, &vars).output().unwrap(), 7);
    assert!(line.contains("MQTT 127.0.0.1"), "{line}");
    assert!(!dir.path().join(".credentials").exists());
}
