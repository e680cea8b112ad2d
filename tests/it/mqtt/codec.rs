//! The MQTT 3.1.1 / 5 packet encoding the test client needs: what a server sends, decoded, and
//! the primitives to build what a client sends.

use std::collections::BTreeMap;

use super::client::Version;

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

/// Decodes one packet from the server, given its first byte and its body.
pub fn decode(version: Version, first: u8, body: &[u8]) -> Packet {
    let v5 = version == Version::V5;
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

pub fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
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

pub fn read_varint(src: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, byte) in src.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
