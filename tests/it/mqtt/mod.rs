//! MQTT provisioning over real sockets: a raw-packet Rust client for every SPEC §5 rule and
//! reason code, mosquitto's command-line clients exactly as the ThingsBoard docs use them, TLS
//! with a CA generated at test time, and hostile clients.

mod client;
mod codec;
mod hostile;
mod mosquitto;
pub mod pki;
mod protocol;
mod refusals;
mod tls;

use serde_json::{Value, json};

use super::TestServer;

pub use self::client::{Client, Connect, Packet, Version};

/// The NOT_FOUND body, byte for byte.
pub const NOT_FOUND: &str = r#"{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}"#;
/// The FAILURE body, byte for byte.
pub const FAILURE: &str = r#"{"errorMsg":"Failed to provision device!","status":"FAILURE"}"#;

/// A running server with one ALLOW_CREATE_NEW_DEVICES profile.
pub struct Fixture {
    /// The server.
    pub server: TestServer,
    /// The profile's provision key.
    pub key: String,
    /// The profile's provision secret.
    pub secret: String,
}

impl Fixture {
    /// Starts a server with default MQTT settings.
    pub fn start() -> Fixture {
        Fixture::start_with(|_| {})
    }

    /// Starts a server after `adjust` has changed the configuration.
    pub fn start_with(adjust: impl FnOnce(&mut provisiond::config::Config)) -> Fixture {
        let server = TestServer::start_with(adjust);
        let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
        Fixture {
            server,
            key,
            secret,
        }
    }

    /// The plain MQTT address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.mqtt_addr()
    }

    /// A JSON request for `name` with this profile's key and secret, plus `extra` keys.
    pub fn request(&self, name: &str, extra: Value) -> Vec<u8> {
        let mut request = json!({
            "deviceName": name,
            "provisionDeviceKey": self.key,
            "provisionDeviceSecret": self.secret,
        });
        if let (Some(target), Value::Object(extra)) = (request.as_object_mut(), extra) {
            target.extend(extra);
        }
        request.to_string().into_bytes()
    }
}

/// The exact SUCCESS body for an access token.
pub fn token_body(token: &str) -> String {
    format!(
        r#"{{"credentialsValue":"{token}","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}}"#
    )
}

/// A response payload as text.
pub fn text(payload: Vec<u8>) -> String {
    String::from_utf8(payload).expect("a UTF-8 JSON response")
}
