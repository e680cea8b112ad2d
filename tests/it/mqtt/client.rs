//! A deliberately small MQTT 3.1.1 / 5 client on a blocking socket (plain or TLS), built from
//! raw packets so that tests see exactly what provisiond sends: return codes, reason codes,
//! CONNACK properties, packet order. It encodes what the tests send and decodes what a server
//! sends, nothing more. Every read has a deadline (the socket read timeout).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub use super::codec::{Packet, Prop, put_varint};
use super::codec::{decode, put_bytes, put_str, read_varint};

/// How long any single read may wait before the test fails.
pub const READ_DEADLINE: Duration = Duration::from_secs(20);

/// The protocol version a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Both versions, for tests that run once per version.
pub const VERSIONS: [Version; 2] = [Version::V311, Version::V5];

/// A CONNECT packet's fields.
#[derive(Clone, Debug)]
pub struct Connect<'a> {
    /// Client identifier (may be empty).
    pub client_id: &'a str,
    /// User name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
}

impl Connect<'static> {
    /// A provisioning CONNECT as the ThingsBoard SDKs send it: user name `provision`.
    pub fn provision() -> Connect<'static> {
        Connect {
            client_id: "",
            username: Some("provision"),
            password: None,
            keep_alive: 60,
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connection to the server.
pub struct Client {
    version: Version,
    socket: TcpStream,
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Client {
    /// Opens a plain TCP connection; nothing is sent yet.
    pub fn open(addr: SocketAddr, version: Version) -> Client {
        let socket = TcpStream::connect(addr).expect("TCP connect to the MQTT port");
        socket
            .set_read_timeout(Some(READ_DEADLINE))
            .expect("read timeout");
        socket.set_nodelay(true).expect("nodelay");
        let stream = Box::new(socket.try_clone().expect("socket clone"));
        Client {
            version,
            socket,
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens a TLS connection (the handshake completes on the first write or read).
    pub fn open_tls(
        addr: SocketAddr,
        version: Version,
        config: Arc<rustls::ClientConfig>,
    ) -> Client {
        let socket = TcpStream::connect(addr).expect("TCP connect to the MQTT TLS port");
        socket
            .set_read_timeout(Some(READ_DEADLINE))
            .expect("read timeout");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        let connection = rustls::ClientConnection::new(config, name).expect("TLS client");
        let stream = Box::new(rustls::StreamOwned::new(
            connection,
            socket.try_clone().expect("socket clone"),
        ));
        Client {
            version,
            socket,
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens a connection and completes a provisioning CONNECT, asserting CONNACK success.
    pub fn provisioning(addr: SocketAddr, version: Version) -> Client {
        let mut client = Client::open(addr, version);
        let code = client.handshake(&Connect::provision());
        assert_eq!(code, 0, "provisioning CONNECT accepted");
        client
    }

    /// Sends CONNECT and returns the CONNACK code.
    pub fn handshake(&mut self, connect: &Connect<'_>) -> u8 {
        self.send_connect(connect);
        match self.recv() {
            Some(Packet::ConnAck { code, .. }) => code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends CONNECT.
    pub fn send_connect(&mut self, connect: &Connect<'_>) {
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        body.push(match self.version {
            Version::V311 => 4,
            Version::V5 => 5,
        });
        let mut flags = 0x02; // clean session / clean start
        if connect.username.is_some() {
            flags |= 0x80;
        }
        if connect.password.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&connect.keep_alive.to_be_bytes());
        self.put_no_props(&mut body);
        put_str(&mut body, connect.client_id);
        if let Some(username) = connect.username {
            put_str(&mut body, username);
        }
        if let Some(password) = connect.password {
            put_bytes(&mut body, password);
        }
        self.send_packet(0x10, &body);
    }

    /// Sends SUBSCRIBE with (filter, QoS) pairs.
    pub fn subscribe(&mut self, packet_id: u16, filters: &[(&str, u8)]) {
        let mut body = packet_id.to_be_bytes().to_vec();
        self.put_no_props(&mut body);
        for (filter, qos) in filters {
            put_str(&mut body, filter);
            body.push(*qos);
        }
        self.send_packet(0x82, &body);
    }

    /// Sends SUBSCRIBE and returns the SUBACK codes.
    pub fn subscribe_ack(&mut self, packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        self.subscribe(packet_id, filters);
        match self.recv() {
            Some(Packet::SubAck {
                packet_id: id,
                codes,
            }) if id == packet_id => codes,
            other => panic!("expected SUBACK {packet_id}, got {other:?}"),
        }
    }

    /// Sends UNSUBSCRIBE and returns the UNSUBACK codes (empty for 3.1.1).
    pub fn unsubscribe_ack(&mut self, packet_id: u16, filters: &[&str]) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        self.put_no_props(&mut body);
        for filter in filters {
            put_str(&mut body, filter);
        }
        self.send_packet(0xA2, &body);
        match self.recv() {
            Some(Packet::UnsubAck {
                packet_id: id,
                codes,
            }) if id == packet_id => codes,
            other => panic!("expected UNSUBACK {packet_id}, got {other:?}"),
        }
    }

    /// Sends PUBLISH; `packet_id` is used for QoS > 0.
    pub fn publish(&mut self, topic: &str, qos: u8, packet_id: u16, payload: &[u8]) {
        let mut body = Vec::new();
        put_str(&mut body, topic);
        if qos > 0 {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        self.put_no_props(&mut body);
        body.extend_from_slice(payload);
        self.send_packet(0x30 | (qos << 1), &body);
    }

    /// Sends PUBACK for a received QoS 1 PUBLISH.
    pub fn puback(&mut self, packet_id: u16) {
        self.send_packet(0x40, &packet_id.to_be_bytes());
    }

    /// Sends PINGREQ.
    pub fn ping(&mut self) {
        self.send_packet(0xC0, &[]);
    }

    /// Sends DISCONNECT.
    pub fn disconnect(&mut self) {
        self.send_packet(0xE0, &[]);
    }

    /// Writes raw bytes; errors are ignored (the server may already have closed).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
    }

    /// Closes the socket at once, without DISCONNECT.
    pub fn drop_connection(self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// The next packet, or `None` once the server has closed the connection. Panics when
    /// nothing arrives within [`READ_DEADLINE`].
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.take_packet() {
                return Some(packet);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("no packet from the server within {READ_DEADLINE:?}")
                }
                // A reset or a TLS close without close_notify: the server is gone.
                Err(_) => return None,
            }
        }
    }

    /// Reads until the server closes the connection; returns everything received before.
    pub fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv() {
            packets.push(packet);
        }
        packets
    }

    /// A provisioning round trip: publishes `payload` to `/provision/request` at `qos` and
    /// returns the response payload, acknowledging it if it came at QoS 1. Asserts the PUBACK
    /// (QoS 1) arrives before the response.
    pub fn request(&mut self, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
        self.publish("/provision/request", qos, packet_id, payload);
        if qos == 1 {
            match self.recv() {
                Some(Packet::PubAck { packet_id: id, .. }) => assert_eq!(id, packet_id),
                other => panic!("expected the PUBACK before the response, got {other:?}"),
            }
        }
        self.response()
    }

    /// Waits for a PUBLISH on `/provision/response`, acknowledges it if QoS 1, returns its payload.
    pub fn response(&mut self) -> Vec<u8> {
        match self.recv() {
            Some(Packet::Publish {
                topic,
                qos,
                packet_id,
                payload,
                ..
            }) => {
                assert_eq!(topic, "/provision/response");
                if qos == 1 {
                    self.puback(packet_id.expect("QoS 1 has a packet id"));
                }
                payload
            }
            other => panic!("expected the response PUBLISH, got {other:?}"),
        }
    }

    fn put_no_props(&self, body: &mut Vec<u8>) {
        if self.version == Version::V5 {
            body.push(0);
        }
    }

    fn send_packet(&mut self, first_byte: u8, body: &[u8]) {
        let mut packet = vec![first_byte];
        put_varint(&mut packet, body.len() as u32);
        packet.extend_from_slice(body);
        self.send_raw(&packet);
    }

    fn take_packet(&mut self) -> Option<Packet> {
        let (len, used) = read_varint(self.buf.get(1..)?)?;
        let total = 1 + used + len as usize;
        if self.buf.len() < total {
            return None;
        }
        let first = self.buf[0];
        let body: Vec<u8> = self.buf[1 + used..total].to_vec();
        self.buf.drain(..total);
        Some(decode(self.version, first, &body))
    }
}
