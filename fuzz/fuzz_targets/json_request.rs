//! The JSON provisioning request parser (HTTP body, MQTT and CoAP payloads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::engine::provision::Transport;
use provisiond::transport::wire;

fuzz_target!(|data: &[u8]| {
    // Either a request or a parse error; the error message must encode as JSON.
    if let Err(error) = wire::parse_json(data, Transport::Http) {
        let body = wire::parse_error_json(&error);
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    }
});
