//! One provisioning exchange on one transport: send the request body, return the answer's
//! text. Every error here is worth another attempt (the server may be down or restarting).

pub mod coap;
pub mod http;
pub mod mqtt;
pub mod tls;

use std::time::Duration;

/// The transport the agent provisions over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MQTT 3.1.1, user name `provision` (the gateway's choice).
    Mqtt,
    /// HTTP `POST /api/v1/provision`.
    Http,
    /// CoAP `POST /api/v1/provision`, confirmable.
    Coap,
}

impl Kind {
    /// The default port: ThingsBoard's.
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Mqtt => 1883,
            Kind::Http => 8080,
            Kind::Coap => 5683,
        }
    }
}

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// MQTT over TLS, and how to check the server.
    pub tls: Option<tls::ServerCheck>,
    /// Bound on one exchange, connection included.
    pub timeout: Duration,
}

/// Sends `body` and returns the answer's text.
pub fn exchange(kind: Kind, endpoint: &Endpoint, body: &str) -> Result<String, String> {
    match kind {
        Kind::Mqtt => mqtt::exchange(endpoint, body),
        Kind::Http => http::exchange(endpoint, body),
        Kind::Coap => coap::exchange(endpoint, body),
    }
}
