//! CoAP over real UDP: `coap-client` exactly as the seed shows it (confirmable and not), a Rust
//! client for every SPEC rule and credentials type, retransmissions, block-wise transfers both
//! ways, malformed datagrams, the in-flight bound, and the port check at start. This module holds
//! the Rust client and the helpers; the tests are in the submodules.

mod block_wise;
mod coap_client;
mod message_layer;
mod rules;
mod throttle;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use base64::Engine as _;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use serde_json::Value;
use sha3::{Digest, Sha3_256};

use super::{TestServer, agent};

const NOT_FOUND: &str = r#"{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}"#;
const FAILURE: &str = r#"{"errorMsg":"Failed to provision device!","status":"FAILURE"}"#;
const PROVISION: &str = "/api/v1/provision";

const GET: u8 = 0x01;
const POST: u8 = 0x02;
const PUT: u8 = 0x03;

const ETAG: u16 = 4;
const MAX_AGE: u16 = 14;
const CONTENT_FORMAT: u16 = 12;
const BLOCK2: u16 = 23;
const BLOCK1: u16 = 27;
const SIZE2: u16 = 28;
const SIZE1: u16 = 60;

/// How long a reply may take before the test fails: a deadline, not a measurement.
const REPLY_DEADLINE: Duration = Duration::from_secs(20);

/// A CoAP client on a real UDP socket, one exchange at a time.
struct Client {
    socket: UdpSocket,
    next_message_id: u16,
    next_token: u32,
}

impl Client {
    fn connect(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        // Connected: only the server's datagrams are received.
        socket.connect(server).expect("connect");
        socket.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
        Client {
            socket,
            next_message_id: 0x2000,
            next_token: 0x0100_0000,
        }
    }

    /// A request with a fresh message id and token.
    fn request(&mut self, confirmable: bool, method: u8, path: &str, payload: &[u8]) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_type(if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        packet.header.code = MessageClass::from(method);
        self.next_message_id = self.next_message_id.wrapping_add(1);
        packet.header.message_id = self.next_message_id;
        self.next_token += 1;
        packet.set_token(self.next_token.to_be_bytes().to_vec());
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        packet.payload = payload.to_vec();
        packet
    }

    fn send(&self, datagram: &[u8]) {
        self.socket.send(datagram).expect("datagram sent");
    }

    fn receive(&self) -> Vec<u8> {
        let mut buffer = vec![0; 65_536];
        let len = self
            .socket
            .recv(&mut buffer)
            .expect("a datagram from the server before the deadline");
        buffer.truncate(len);
        buffer
    }

    /// Sends a request and returns its reply, checking the message layer on the way: a
    /// piggybacked ACK with the request's message id for a confirmable request, a NON for a
    /// non-confirmable one, and the token echoed.
    fn exchange(&self, request: &Packet) -> Packet {
        self.send(&encode(request));
        let reply = Packet::from_bytes(&self.receive()).expect("a well-formed reply");
        if request.header.get_type() == MessageType::Confirmable {
            assert_eq!(reply.header.get_type(), MessageType::Acknowledgement);
            assert_eq!(reply.header.message_id, request.header.message_id);
        } else {
            assert_eq!(reply.header.get_type(), MessageType::NonConfirmable);
        }
        assert_eq!(reply.get_token(), request.get_token(), "token echoed");
        reply
    }

    /// A confirmable POST to /api/v1/provision.
    fn post(&mut self, payload: &[u8]) -> Packet {
        let request = self.request(true, POST, PROVISION, payload);
        self.exchange(&request)
    }

    /// Proves that the server sent nothing back for what came before: the next datagram is the
    /// 4.04 answering a fresh probe (the server handles datagrams in order on one socket).
    fn assert_nothing_came_back(&mut self) {
        let probe = self.request(true, GET, "/probe", b"");
        let reply = self.exchange(&probe);
        assert_eq!(code(&reply), "4.04");
    }
}

fn encode(packet: &Packet) -> Vec<u8> {
    packet.to_bytes_unlimited().expect("encodable")
}

fn code(packet: &Packet) -> String {
    packet.header.code.to_string()
}

fn text(packet: &Packet) -> String {
    String::from_utf8(packet.payload.clone()).expect("UTF-8 payload")
}

fn option(packet: &Packet, number: u16) -> Option<Vec<u8>> {
    packet
        .get_option(CoapOption::from(number))
        .and_then(|values| values.front().cloned())
}

fn uint(value: &[u8]) -> u32 {
    value.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

fn uint_option(packet: &Packet, number: u16) -> Option<u32> {
    option(packet, number).map(|v| uint(&v))
}

fn block(num: usize, more: bool, szx: u8) -> Vec<u8> {
    let value = ((num as u32) << 4) | (u32::from(more) << 3) | u32::from(szx);
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

fn parse_block(value: &[u8]) -> (usize, bool, u8) {
    let scalar = uint(value);
    ((scalar >> 4) as usize, scalar & 8 != 0, (scalar & 7) as u8)
}

/// Sends `body` as a confirmable request, expects `expected_code` with exactly `expected`.
fn check(client: &mut Client, confirmable: bool, body: Value, expected_code: &str, expected: &str) {
    let request = client.request(confirmable, POST, PROVISION, body.to_string().as_bytes());
    let reply = client.exchange(&request);
    assert_eq!(
        (code(&reply).as_str(), text(&reply).as_str()),
        (expected_code, expected),
        "request {body}"
    );
    assert_eq!(
        uint_option(&reply, CONTENT_FORMAT),
        Some(50),
        "application/json"
    );
}

/// Sends `body`, expects 2.01 SUCCESS and returns the credentials value.
fn success(client: &mut Client, body: Value) -> Value {
    let reply = client.post(body.to_string().as_bytes());
    assert_eq!(code(&reply), "2.01", "request {body} got {}", text(&reply));
    let reply: Value = serde_json::from_str(&text(&reply)).unwrap();
    assert_eq!(reply["status"], "SUCCESS");
    reply["credentialsValue"].clone()
}

/// The value of a counter on /metrics (0 while it was never incremented).
fn counter(server: &TestServer, name: &str) -> u64 {
    let mut response = agent().get(server.url("/metrics")).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    text.lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A self-signed certificate far larger than one CoAP block: its PEM, and the base64 of its DER
/// (what ThingsBoard stores and returns).
fn big_certificate(name: &str) -> (String, String) {
    let names: Vec<String> = (0..120)
        .map(|i| format!("{name}-{i:03}.devices.example.com"))
        .collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
    let base64 = base64::engine::general_purpose::STANDARD.encode(certified.cert.der());
    (certified.cert.pem(), base64)
}

fn sha3_hex(text: &str) -> String {
    hex::encode(Sha3_256::digest(text.as_bytes()))
}

fn x509_body(value: &str) -> String {
    format!(
        r#"{{"credentialsValue":"{value}","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}}"#
    )
}
