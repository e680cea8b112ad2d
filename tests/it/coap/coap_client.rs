//! libcoap's `coap-client`, as the seed shows it and with a certificate too large for one
//! datagram; and the binary's printed CoAP address.

use std::process::Command;

use serde_json::{Value, json};

use super::{Client, big_certificate, sha3_hex, success, x509_body};
use crate::{ADMIN_TOKEN, ServerProcess, TestServer, admin_call, agent, request};

/// `coap-client` from libcoap; Debian's libcoap3-bin may install only `coap-client-notls`.
fn coap_client_binary() -> &'static str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["coap-client", "coap-client-notls"] {
        if std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
            return name;
        }
    }
    panic!("neither coap-client nor coap-client-notls is on the PATH (Debian: libcoap3-bin)");
}

/// Runs coap-client with `args`; returns the payload line it printed on standard output.
fn run_coap_client(args: &[&str]) -> String {
    let output = Command::new(coap_client_binary())
        .args(args)
        .output()
        .expect("coap-client runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "coap-client failed: {stderr}");
    stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_else(|| panic!("coap-client printed no payload; stderr: {stderr}"))
        .to_string()
}

const SEED_KEY: &str = "PUT_PROVISION_KEY_HERE";
const SEED_SECRET: &str = "PUT_PROVISION_SECRET_HERE";
/// The seed's first request, byte for byte.
const SEED_GENERATED: &str = r#"{"deviceName":"DEVICE_NAME","provisionDeviceKey":"PUT_PROVISION_KEY_HERE","provisionDeviceSecret":"PUT_PROVISION_SECRET_HERE"}"#;
/// The seed's second request, byte for byte.
const SEED_TOKEN: &str = r#"{"deviceName":"DEVICE_NAME","provisionDeviceKey":"PUT_PROVISION_KEY_HERE","provisionDeviceSecret":"PUT_PROVISION_SECRET_HERE","credentialsType":"ACCESS_TOKEN","token":"DEVICE_ACCESS_TOKEN"}"#;

/// A profile with the seed's key and secret, so that its commands run unchanged.
fn seed_profile(server: &TestServer) {
    let (status, body) = server.admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({ "name": "seed", "provisionDeviceKey": SEED_KEY, "provisionDeviceSecret": SEED_SECRET })),
    );
    assert_eq!(status, 201, "{body}");
}

/// The seed's command: `coap-client -v 6 -m POST -t "application/json" -e '<payload>'
/// "coap://$THINGSBOARD_HOST:5683/api/v1/provision"`, with `-N` for non-confirmable.
fn seed_command(server: &TestServer, payload: &str, confirmable: bool) -> String {
    let uri = format!("coap://{}/api/v1/provision", server.coap_addr());
    let mut args = vec![];
    if !confirmable {
        args.push("-N");
    }
    args.extend([
        "-v",
        "6",
        "-m",
        "POST",
        "-t",
        "application/json",
        "-e",
        payload,
        &uri,
    ]);
    run_coap_client(&args)
}

#[test]
fn coap_client_provisions_exactly_as_the_seed_shows() {
    // The first seed command: a generated token, confirmable; non-confirmable replays it.
    let server = TestServer::start();
    seed_profile(&server);
    let line = seed_command(&server, SEED_GENERATED, true);
    let reply: Value = serde_json::from_str(&line).expect("the payload is JSON");
    let token = reply["credentialsValue"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 20);
    assert_eq!(
        line,
        format!(
            r#"{{"credentialsValue":"{token}","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}}"#
        )
    );
    assert_eq!(seed_command(&server, SEED_GENERATED, false), line);
    assert_eq!(
        server.device("DEVICE_NAME").unwrap()["credentialsValue"],
        json!(token)
    );
    let stored = server.device("DEVICE_NAME").unwrap();
    assert_eq!(stored["provisionState"], "provisioned");

    // The second seed command: the device's own token, non-confirmable first, then confirmable.
    let server = TestServer::start();
    seed_profile(&server);
    let expected = r#"{"credentialsValue":"DEVICE_ACCESS_TOKEN","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#;
    assert_eq!(seed_command(&server, SEED_TOKEN, false), expected);
    assert_eq!(seed_command(&server, SEED_TOKEN, true), expected);
    assert_eq!(server.device_names("seed"), ["DEVICE_NAME"]);
}

#[test]
fn coap_client_sends_a_large_x509_certificate_block_wise() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("coap://{}/api/v1/provision", server.coap_addr());
    // Without -b, libcoap itself switches to 1024-byte blocks for a body this large; with
    // -b 64 a constrained device's small blocks are used, both ways.
    for (name, block_args) in [("cert-auto", vec![]), ("cert-64", vec!["-b", "64"])] {
        let (pem, value) = big_certificate(name);
        let mut body = request(&key, &secret, name);
        body["credentialsType"] = json!("X509_CERTIFICATE");
        body["hash"] = json!(pem);
        let body = body.to_string();
        assert!(
            body.len() > 4096,
            "more than one datagram: {} bytes",
            body.len()
        );
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, &body).unwrap();
        let mut args = vec!["-m", "POST", "-t", "application/json"];
        args.extend(block_args);
        args.extend(["-f", file.to_str().unwrap(), &uri]);
        assert_eq!(run_coap_client(&args), x509_body(&value), "{name}");
        let device = server.device(name).expect("stored");
        assert_eq!(device["credentialsId"], json!(sha3_hex(&value)));
        assert_eq!(device["credentialsValue"], json!(value));
    }
}

#[test]
fn the_binary_serves_coap_on_the_address_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let (status, profile) = admin_call(
        &agent(),
        &format!("http://{}/api/admin/profiles", server.addr),
        "POST",
        Some(ADMIN_TOKEN),
        Some(json!({ "name": "fleet" })),
    );
    assert_eq!(status, 201, "{profile}");
    let key = profile["provisionDeviceKey"].as_str().unwrap();
    let secret = profile["provisionDeviceSecret"].as_str().unwrap();
    let mut client = Client::connect(server.coap_addr);
    success(&mut client, request(key, secret, "from-the-binary"));
    server.kill();
}
