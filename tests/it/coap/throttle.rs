//! Brute-force protection over CoAP: a guessing UDP client is answered 4.00 NOT_FOUND without
//! being checked once its source's bucket is empty; the answer is the same as for a wrong secret.

use serde_json::json;

use super::{Client, NOT_FOUND, code};
use crate::TestServer;
use crate::throttle::counter;

#[test]
fn a_coap_guesser_is_throttled() {
    let server = TestServer::start_with(|config| {
        config.throttle.per_source_burst = 2;
        config.throttle.per_source_per_minute = 1;
    });
    let (key, secret) = server.profile(
        "coap-guessed",
        "ALLOW_CREATE_NEW_DEVICES",
        "RETURN_EXISTING",
    );
    let before = counter(
        &server,
        "provisiond_provision_throttled_total",
        r#"transport="COAP""#,
    );
    let mut client = Client::connect(server.coap_addr());
    for i in 0..4 {
        let body = json!({"provisionDeviceKey": key, "provisionDeviceSecret": format!("g{i}")});
        let reply = client.post(body.to_string().as_bytes());
        assert_eq!(code(&reply), "4.00");
        assert_eq!(String::from_utf8(reply.payload).unwrap(), NOT_FOUND);
    }
    let body =
        json!({"provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": "c"});
    let reply = client.post(body.to_string().as_bytes());
    assert_eq!(String::from_utf8(reply.payload).unwrap(), NOT_FOUND);
    assert!(server.device("c").is_none());
    let after = counter(
        &server,
        "provisiond_provision_throttled_total",
        r#"transport="COAP""#,
    );
    assert!(after >= before + 3.0, "{before} -> {after}");
}
