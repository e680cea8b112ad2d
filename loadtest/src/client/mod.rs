//! Wire clients: one device's request over HTTP, MQTT (3.1.1, 5, TCP, TLS) or CoAP, and what
//! came of it.

pub mod coap;
pub mod http;
pub mod mqtt;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::fleet::{Creds, parse_response};

/// What one request came to.
#[derive(Debug)]
pub enum Outcome {
    /// SUCCESS with these credentials (or, for the MQTT `connect` flow, an accepted CONNECT).
    Success(Option<Creds>),
    /// An answer other than SUCCESS: `STATUS: errorMsg`, `http 503`, `coap 5.03`.
    Refused(String),
    /// The connection could not be opened (TCP connect or TLS handshake).
    ConnectFailed(String),
    /// No answer in time, or the connection broke.
    Failed(String),
}

impl Outcome {
    /// Reads a provisioning response body.
    pub fn from_body(body: &[u8]) -> Outcome {
        match parse_response(body) {
            Ok(creds) => Outcome::Success(Some(creds)),
            Err(refusal) => Outcome::Refused(refusal),
        }
    }
}

/// Where the server listens.
#[derive(Clone, Debug)]
pub struct Targets {
    /// HTTP address and Host header.
    pub http: Option<(SocketAddr, String)>,
    /// Plain MQTT.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS, with the client configuration and the server name.
    pub mqtt_tls: Option<(
        SocketAddr,
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// CoAP.
    pub coap: Option<SocketAddr>,
}

/// Names an I/O error briefly, for error counts.
pub fn io_reason(e: &std::io::Error) -> String {
    format!("{:?}", e.kind())
}
