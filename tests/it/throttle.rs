//! Brute-force protection over real sockets: a client guessing secrets from 127.0.0.1 is
//! answered NOT_FOUND without being checked once its bucket is empty (even when it finally sends
//! the right secret), while an honest device on another loopback address (127.0.0.2, bound with
//! curl's `--interface`) still provisions. Linux routes all of 127.0.0.0/8 to loopback.

use std::process::Command;

use serde_json::{Value, json};

use super::mqtt::{Client, NOT_FOUND, Version};
use super::{TestServer, request};

/// A server whose sources may fail `burst` times and regain one attempt per minute (nothing
/// refills while a test runs).
fn server(source_burst: u32, profile_burst: u32) -> TestServer {
    TestServer::start_with(|config| {
        config.throttle.per_source_burst = source_burst;
        config.throttle.per_source_per_minute = 1;
        config.throttle.per_profile_burst = profile_burst;
        config.throttle.per_profile_per_minute = 1;
    })
}

/// POSTs a provisioning request with curl from `source`; returns the parsed body.
fn provision_from(server: &TestServer, source: &str, body: &Value) -> Value {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--interface", source])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(body.to_string())
        .arg(server.url("/api/v1/provision"))
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "curl failed: {output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON answer")
}

/// The sum of a counter's samples whose labels contain `labels`.
pub fn counter(server: &TestServer, name: &str, labels: &str) -> f64 {
    let text = super::agent()
        .get(server.url("/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const THROTTLED: &str = "provisiond_provision_throttled_total";

#[test]
fn a_guessing_source_is_throttled_while_an_honest_device_elsewhere_provisions() {
    let server = server(3, 1000);
    let (key, secret) = server.profile("guessed", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let before = counter(&server, THROTTLED, r#"transport="HTTP""#);
    // Three wrong guesses are checked and refused; from then on nothing is checked.
    for i in 0..6 {
        let (status, body) = server.provision(&request(&key, &format!("guess-{i}"), "victim"));
        assert_eq!((status, body["status"].as_str()), (200, Some("NOT_FOUND")));
    }
    // Even the right secret is refused now: the source is not checked any more.
    let (_, body) = server.provision(&request(&key, &secret, "guesser-device"));
    assert_eq!(body.to_string(), NOT_FOUND);
    assert!(server.device("guesser-device").is_none());
    assert!(counter(&server, THROTTLED, r#"transport="HTTP""#) >= before + 4.0);
    // The honest device on 127.0.0.2 is not slowed.
    let body = provision_from(&server, "127.0.0.2", &request(&key, &secret, "honest-1"));
    assert_eq!(body["status"], "SUCCESS", "{body}");
    assert!(server.device("honest-1").is_some());
}

#[test]
fn guessers_spread_over_addresses_exhaust_the_profile_but_never_lock_out_honest_devices() {
    let server = server(1000, 4);
    let (key, secret) = server.profile("spread", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    // Four addresses each make one wrong guess: the profile's bucket is empty.
    for i in 3..7 {
        let body = provision_from(&server, &format!("127.0.0.{i}"), &request(&key, "x", "v"));
        assert_eq!(body.to_string(), NOT_FOUND);
    }
    // A guesser that already failed is refused unchecked, right secret or not.
    let body = provision_from(&server, "127.0.0.3", &request(&key, &secret, "guesser-2"));
    assert_eq!(body.to_string(), NOT_FOUND);
    assert!(server.device("guesser-2").is_none());
    assert!(counter(&server, THROTTLED, r#"bucket="profile""#) >= 1.0);
    // Devices that never failed are still checked and provision.
    for (i, source) in ["127.0.0.2", "127.0.0.8"].iter().enumerate() {
        let name = format!("honest-{i}");
        let body = provision_from(&server, source, &request(&key, &secret, &name));
        assert_eq!(body["status"], "SUCCESS", "{body}");
    }
    // Another profile is not affected for the guessers either.
    let (other_key, other_secret) =
        server.profile("other", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let body = provision_from(
        &server,
        "127.0.0.3",
        &request(&other_key, &other_secret, "other-1"),
    );
    assert_eq!(body["status"], "SUCCESS", "{body}");
}

#[test]
fn an_mqtt_guesser_is_throttled_and_stays_throttled_over_http() {
    let server = server(2, 1000);
    let (key, secret) = server.profile("mqtt", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let before = counter(&server, THROTTLED, r#"transport="MQTT""#);
    let mut client = Client::provisioning(server.mqtt_addr(), Version::V311);
    for i in 0..4 {
        let payload = json!({"provisionDeviceKey": key, "provisionDeviceSecret": format!("g{i}")});
        let answer = client.request(1, (i + 1) as u16, payload.to_string().as_bytes());
        assert_eq!(String::from_utf8(answer).unwrap(), NOT_FOUND);
    }
    assert!(counter(&server, THROTTLED, r#"transport="MQTT""#) >= before + 2.0);
    // The bucket belongs to the address, whatever the transport.
    let (_, body) = server.provision(&request(&key, &secret, "mqtt-guesser"));
    assert_eq!(body.to_string(), NOT_FOUND);
    let body = provision_from(&server, "127.0.0.2", &request(&key, &secret, "mqtt-honest"));
    assert_eq!(body["status"], "SUCCESS", "{body}");
}

#[test]
fn protection_can_be_turned_off() {
    let server = TestServer::start_with(|config| {
        config.throttle.enabled = false;
        config.throttle.per_source_burst = 1;
    });
    let (key, secret) = server.profile("open", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    for i in 0..5 {
        let (_, body) = server.provision(&request(&key, &format!("g{i}"), "x"));
        assert_eq!(body.to_string(), NOT_FOUND);
    }
    let (_, body) = server.provision(&request(&key, &secret, "open-1"));
    assert_eq!(body["status"], "SUCCESS", "{body}");
}
