//! A deliberately small MQTT 3.1.1 / 5 client on a blocking socket (plain or TLS), built from
//! raw packets so that tests see exactly what provisiond sends: return codes, reason codes,
//! CONNACK properties, packet order. It encodes what the tests send and decodes what a server
//! sends, nothing more. Every read has a deadline (the socket read timeout).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

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

/// An MQTT 5 property value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prop {
    /// A byte.
    Byte(u8),
    /// A two-byte integer.
    U16(u16),
    /// A four-byte integer.
    U32(u32),
    /// A variable byte integer.
    VarInt(u32),
    /// A UTF-8 string or binary data.
    Bytes(Vec<u8>),
    /// A user property.
    Pair(String, String),
}

/// A packet received from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK.
    ConnAck {
        /// Session present flag.
        session_present: bool,
        /// 3.1.1 return code or MQTT 5 reason code.
        code: u8,
        /// MQTT 5 properties by identifier.
        props: BTreeMap<u8, Prop>,
    },
    /// SUBACK.
    SubAck {
        /// Packet identifier.
        packet_id: u16,
        /// One code per filter.
        codes: Vec<u8>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet identifier.
        packet_id: u16,
        /// One code per filter (MQTT 5 only; empty for 3.1.1).
        codes: Vec<u8>,
    },
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: String,
        /// QoS.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Packet identifier (QoS > 0).
        packet_id: Option<u16>,
        /// Payload.
        payload: Vec<u8>,
    },
    /// PUBACK.
    PubAck {
        /// Packet identifier.
        packet_id: u16,
        /// MQTT 5 reason code (0 when absent or 3.1.1).
        reason: u8,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (MQTT 5).
    Disconnect {
        /// Reason code (0 when absent).
        reason: u8,
    },
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
        Some(self.decode(first, &body))
    }

    fn decode(&self, first: u8, body: &[u8]) -> Packet {
        let v5 = self.version == Version::V5;
        let mut r = Reader(body);
        match first >> 4 {
            2 => {
                let session_present = r.u8() & 1 == 1;
                let code = r.u8();
                let props = if v5 && !r.0.is_empty() {
                    r.props()
                } else {
                    BTreeMap::new()
                };
                Packet::ConnAck {
                    session_present,
                    code,
                    props,
                }
            }
            3 => {
                let qos = (first >> 1) & 3;
                let topic = String::from_utf8(r.bytes()).expect("UTF-8 topic");
                let packet_id = (qos > 0).then(|| r.u16());
                if v5 {
                    r.props();
                }
                Packet::Publish {
                    topic,
                    qos,
                    retain: first & 1 == 1,
                    packet_id,
                    payload: r.0.to_vec(),
                }
            }
            4 => {
                let packet_id = r.u16();
                let reason = if r.0.is_empty() { 0 } else { r.u8() };
                Packet::PubAck { packet_id, reason }
            }
            9 => {
                let packet_id = r.u16();
                if v5 {
                    r.props();
                }
                Packet::SubAck {
                    packet_id,
                    codes: r.0.to_vec(),
                }
            }
            11 => {
                let packet_id = r.u16();
                if v5 {
                    r.props();
                }
                Packet::UnsubAck {
                    packet_id,
                    codes: r.0.to_vec(),
                }
            }
            13 => Packet::PingResp,
            14 => Packet::Disconnect {
                reason: if r.0.is_empty() { 0 } else { r.u8() },
            },
            other => panic!("unexpected packet type {other} from the server"),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().expect("byte");
        self.0 = rest;
        *b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.u16() as usize;
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head.to_vec()
    }

    fn varint(&mut self) -> u32 {
        let (value, used) = read_varint(self.0).expect("variable byte integer");
        self.0 = &self.0[used..];
        value
    }

    fn props(&mut self) -> BTreeMap<u8, Prop> {
        let len = self.varint() as usize;
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        let mut r = Reader(head);
        let mut props = BTreeMap::new();
        while !r.0.is_empty() {
            let id = r.u8();
            let value = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Prop::Byte(r.u8()),
                0x13 | 0x21 | 0x22 | 0x23 => Prop::U16(r.u16()),
                0x02 | 0x11 | 0x18 | 0x27 => Prop::U32(r.u32()),
                0x0B => Prop::VarInt(r.varint()),
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                    Prop::Bytes(r.bytes())
                }
                0x26 => {
                    let key = String::from_utf8(r.bytes()).expect("UTF-8");
                    let value = String::from_utf8(r.bytes()).expect("UTF-8");
                    Prop::Pair(key, value)
                }
                other => panic!("unknown MQTT 5 property 0x{other:02x}"),
            };
            props.insert(id, value);
        }
        props
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an MQTT variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

fn read_varint(src: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, byte) in src.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
