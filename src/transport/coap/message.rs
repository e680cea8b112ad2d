//! The RFC 7252 message layer: which datagrams are requests, which are rejected with a Reset and
//! which are silently ignored; and how replies are encoded. coap-lite does the option codec; the
//! checks it leaves out (version, payload marker, code classes) are made here. No state, no IO.

use std::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::block::Block;
use crate::transport::wire::{self, ParseError};

/// The only CoAP version (RFC 7252 §3).
const VERSION: u8 = 1;

const TYPE_CON: u8 = 0;
const TYPE_NON: u8 = 1;

/// Request and response codes used here, as the header's code byte (class << 5 | detail).
pub(super) mod code {
    /// 0.02 POST
    pub(in crate::transport::coap) const POST: u8 = 0x02;
    /// 2.01 Created
    pub(in crate::transport::coap) const CREATED: u8 = 0x41;
    /// 2.31 Continue
    pub(in crate::transport::coap) const CONTINUE: u8 = 0x5f;
    /// 4.00 Bad Request
    pub(in crate::transport::coap) const BAD_REQUEST: u8 = 0x80;
    /// 4.02 Bad Option
    pub(in crate::transport::coap) const BAD_OPTION: u8 = 0x82;
    /// 4.04 Not Found
    pub(in crate::transport::coap) const NOT_FOUND: u8 = 0x84;
    /// 4.05 Method Not Allowed
    pub(in crate::transport::coap) const METHOD_NOT_ALLOWED: u8 = 0x85;
    /// 4.08 Request Entity Incomplete
    pub(in crate::transport::coap) const REQUEST_ENTITY_INCOMPLETE: u8 = 0x88;
    /// 4.13 Request Entity Too Large
    pub(in crate::transport::coap) const REQUEST_ENTITY_TOO_LARGE: u8 = 0x8d;
    /// 5.03 Service Unavailable
    pub(in crate::transport::coap) const SERVICE_UNAVAILABLE: u8 = 0xa3;
    /// 5.05 Proxying Not Supported
    pub(in crate::transport::coap) const PROXYING_NOT_SUPPORTED: u8 = 0xa5;
}

/// Content-Format 50, application/json (SPEC §5 deviation: ThingsBoard sends 0).
pub(super) const CONTENT_FORMAT_JSON: u16 = 50;

/// Option numbers this server acts on.
pub(super) mod option {
    /// Block2
    pub(in crate::transport::coap) const BLOCK2: u16 = 23;
    /// Block1
    pub(in crate::transport::coap) const BLOCK1: u16 = 27;
    /// Proxy-Uri
    pub(in crate::transport::coap) const PROXY_URI: u16 = 35;
    /// Proxy-Scheme
    pub(in crate::transport::coap) const PROXY_SCHEME: u16 = 39;
    /// Size1
    pub(in crate::transport::coap) const SIZE1: u16 = 60;
}

/// Critical options this server recognizes (RFC 7252 §5.4.1): the Uri-* options, Accept
/// (ignored, as ThingsBoard does) and the block options. Elective options (even numbers) are
/// ignored whatever they are.
const RECOGNIZED_CRITICAL: [u16; 7] = [3, 7, 11, 15, 17, 23, 27];

/// What a datagram is.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A well-formed request.
    Request(Packet),
    /// A confirmable message to reject with a Reset (RFC 7252 §4.2).
    Reset {
        /// The message id the Reset must carry.
        message_id: u16,
        /// Malformed (counted), or a well-formed Empty message (a CoAP ping).
        malformed: bool,
    },
    /// Nothing to answer (RFC 7252 §3: unknown version; §4.3: a rejected non-confirmable
    /// message; ACKs and Resets, since this server sends nothing confirmable).
    Ignore {
        /// Malformed (counted).
        malformed: bool,
    },
}

/// Sorts one datagram.
pub(super) fn classify(datagram: &[u8]) -> Inbound {
    let [first, code, mid_high, mid_low, ..] = *datagram else {
        return Inbound::Ignore { malformed: true };
    };
    if first >> 6 != VERSION {
        return Inbound::Ignore { malformed: true };
    }
    let message_id = u16::from_be_bytes([mid_high, mid_low]);
    let kind = (first >> 4) & 0x3;
    if kind != TYPE_CON && kind != TYPE_NON {
        return Inbound::Ignore { malformed: false };
    }
    // A rejected confirmable message gets a Reset; a rejected non-confirmable one is ignored,
    // which RFC 7252 §4.3 allows and which gives a spoofed source no reflected traffic.
    let reject = |malformed| {
        if kind == TYPE_CON {
            Inbound::Reset {
                message_id,
                malformed,
            }
        } else {
            Inbound::Ignore { malformed }
        }
    };
    if code == 0 {
        // An Empty message is exactly the 4-byte header (§4.1); a confirmable one is a ping.
        return reject(datagram.len() != 4 || kind == TYPE_NON);
    }
    if code >> 5 != 0 {
        // A response (or a reserved class) sent to a server: no context to process it.
        return reject(true);
    }
    match Packet::from_bytes(datagram) {
        Ok(packet) if !empty_payload_after_marker(datagram, &packet) => Inbound::Request(packet),
        _ => reject(true),
    }
}

/// RFC 7252 §3: a payload marker followed by a zero-length payload is a format error, which
/// coap-lite accepts. Walks the (already validated) options to find where they end.
fn empty_payload_after_marker(datagram: &[u8], packet: &Packet) -> bool {
    if !packet.payload.is_empty() {
        return false;
    }
    let mut idx = 4 + packet.get_token().len();
    while let Some(&byte) = datagram.get(idx) {
        if byte == 0xff {
            return true;
        }
        idx += 1;
        let extended = |nibble: u8| match nibble {
            13 => 1,
            14 => 2,
            _ => 0,
        };
        let delta_len = extended(byte >> 4);
        let length_nibble = byte & 0x0f;
        let length = match length_nibble {
            13 => datagram.get(idx + delta_len).map(|b| usize::from(*b) + 13),
            14 => datagram
                .get(idx + delta_len..idx + delta_len + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])) + 269),
            n => Some(usize::from(n)),
        };
        let Some(length) = length else {
            return false;
        };
        idx += delta_len + extended(length_nibble) + length;
    }
    false
}

/// Who sent a request, and what the reply must echo.
#[derive(Clone, Debug)]
pub(super) struct Exchange {
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// The request's message id.
    pub(super) message_id: u16,
    /// Confirmable (answered by a piggybacked ACK) or not (answered by a NON).
    pub(super) confirmable: bool,
    /// Echoed in the reply.
    pub(super) token: Vec<u8>,
}

impl Exchange {
    /// The exchange of a request from `peer`.
    pub(super) fn of(peer: SocketAddr, request: &Packet) -> Exchange {
        Exchange {
            peer,
            message_id: request.header.message_id,
            confirmable: request.header.get_type() == MessageType::Confirmable,
            token: request.get_token().to_vec(),
        }
    }
}

/// A reply before encoding.
#[derive(Clone, Debug, Default)]
pub(super) struct Reply {
    /// Response code byte.
    pub(super) code: u8,
    /// Content-Format, if the payload has one.
    pub(super) content_format: Option<u16>,
    /// Payload (the whole body; split into blocks when encoded if too large).
    pub(super) payload: Vec<u8>,
    /// Block1 echoed to a block-wise request.
    pub(super) block1: Option<Block>,
    /// Block2 of a block-wise response.
    pub(super) block2: Option<Block>,
    /// Size1: the largest request body accepted (with 4.13).
    pub(super) size1: Option<u32>,
    /// Size2: the whole response body's size (with Block2).
    pub(super) size2: Option<u32>,
    /// ETag of a block-wise response.
    pub(super) etag: Option<[u8; 4]>,
    /// Max-Age: seconds before a retry (with 5.03).
    pub(super) max_age: Option<u32>,
}

impl Reply {
    /// A reply without payload.
    pub(super) fn empty(code: u8) -> Reply {
        Reply {
            code,
            ..Reply::default()
        }
    }

    /// A JSON reply.
    pub(super) fn json(code: u8, body: String) -> Reply {
        Reply {
            code,
            content_format: Some(CONTENT_FORMAT_JSON),
            payload: body.into_bytes(),
            ..Reply::default()
        }
    }

    /// A refusal carrying SPEC §3's parse-error body, naming the problem.
    pub(super) fn refusal(code: u8, message: impl Into<String>) -> Reply {
        Reply::json(code, wire::parse_error_json(&ParseError(message.into())))
    }
}

/// Encodes `reply` to `exchange`'s request: a piggybacked ACK with the request's message id for
/// a confirmable request, else a NON with `non_message_id`; the token is echoed either way.
pub(super) fn encode(exchange: &Exchange, reply: &Reply, non_message_id: u16) -> Vec<u8> {
    let mut packet = Packet::new();
    if exchange.confirmable {
        packet.header.set_type(MessageType::Acknowledgement);
        packet.header.message_id = exchange.message_id;
    } else {
        packet.header.set_type(MessageType::NonConfirmable);
        packet.header.message_id = non_message_id;
    }
    packet.header.code = MessageClass::from(reply.code);
    packet.set_token(exchange.token.clone());
    if let Some(etag) = reply.etag {
        packet.add_option(CoapOption::ETag, etag.to_vec());
    }
    if let Some(format) = reply.content_format {
        packet.add_option(CoapOption::ContentFormat, uint_bytes(u32::from(format)));
    }
    if let Some(seconds) = reply.max_age {
        packet.add_option(CoapOption::MaxAge, uint_bytes(seconds));
    }
    if let Some(block) = reply.block2 {
        packet.add_option(CoapOption::Block2, block.encode());
    }
    if let Some(block) = reply.block1 {
        packet.add_option(CoapOption::Block1, block.encode());
    }
    if let Some(size) = reply.size2 {
        packet.add_option(CoapOption::Size2, uint_bytes(size));
    }
    if let Some(size) = reply.size1 {
        packet.add_option(CoapOption::Size1, uint_bytes(size));
    }
    packet.payload = reply.payload.clone();
    packet
        .to_bytes_unlimited()
        .expect("without a size limit, encoding only fails on a buffer under 4 bytes")
}

/// A Reset for `message_id`: the 4-byte header, type RST, code 0.00.
pub(super) fn reset(message_id: u16) -> Vec<u8> {
    let [high, low] = message_id.to_be_bytes();
    vec![(VERSION << 6) | (3 << 4), 0, high, low]
}

/// A uint option value in the fewest bytes (RFC 7252 §3.2).
pub(super) fn uint_bytes(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// A uint option value, if it fits in 4 bytes.
pub(super) fn uint(value: &[u8]) -> Option<u32> {
    (value.len() <= 4).then(|| value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// The first value of an option, by number.
pub(super) fn first_option(packet: &Packet, number: u16) -> Option<&[u8]> {
    packet
        .get_option(CoapOption::from(number))
        .and_then(|values| values.front())
        .map(Vec::as_slice)
}

/// The first critical option this server does not recognize, if any.
pub(super) fn unrecognized_critical_option(packet: &Packet) -> Option<u16> {
    packet
        .options()
        .map(|(number, _)| *number)
        .find(|number| number & 1 == 1 && !RECOGNIZED_CRITICAL.contains(number))
}

/// Whether the Uri-Path is `/api/v1/provision` or `/api/v1/<anything>/provision` (TB-REFERENCE
/// §8: the segment before `provision` is ignored).
pub(super) fn is_provision_path(packet: &Packet) -> bool {
    let segments: Vec<&[u8]> = packet
        .get_option(CoapOption::UriPath)
        .map(|values| values.iter().map(Vec::as_slice).collect())
        .unwrap_or_default();
    match segments.as_slice() {
        [api, v1, last] | [api, v1, _, last] => {
            *api == b"api" && *v1 == b"v1" && *last == b"provision"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &[&str]) -> Packet {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(code::POST);
        packet.header.message_id = 0x1234;
        packet.set_token(vec![1, 2]);
        for segment in path {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        packet.payload = b"{}".to_vec();
        packet
    }

    fn bytes(packet: &Packet) -> Vec<u8> {
        packet.to_bytes().unwrap()
    }

    #[test]
    fn well_formed_requests_are_requests() {
        let datagram = bytes(&post(&["api", "v1", "provision"]));
        let Inbound::Request(packet) = classify(&datagram) else {
            panic!("a POST is a request");
        };
        assert!(is_provision_path(&packet));
        assert_eq!(unrecognized_critical_option(&packet), None);
    }

    #[test]
    fn malformed_datagrams_are_reset_when_confirmable_and_ignored_otherwise() {
        let ignored = |d: &[u8]| matches!(classify(d), Inbound::Ignore { malformed: true });
        let reset = |d: &[u8]| {
            matches!(
                classify(d),
                Inbound::Reset {
                    message_id: 0x1234,
                    malformed: true
                }
            )
        };
        assert!(ignored(&[0x40, 0x02, 0x12]), "truncated header");
        assert!(ignored(&[0x80, 0x02, 0x12, 0x34]), "version 2");
        assert!(reset(&[0x49, 0x02, 0x12, 0x34, 1, 2]), "token length 9");
        assert!(
            reset(&[0x40, 0x02, 0x12, 0x34, 0xb5, b'a']),
            "option overruns"
        );
        assert!(reset(&[0x40, 0x02, 0x12, 0x34, 0xf1, 0]), "option delta 15");
        assert!(
            reset(&[0x40, 0x02, 0x12, 0x34, 0xff]),
            "marker without payload"
        );
        assert!(
            reset(&[0x40, 0x45, 0x12, 0x34]),
            "a response sent to the server"
        );
        assert!(reset(&[0x40, 0x00, 0x12, 0x34, 0xff]), "Empty with bytes");
        assert!(
            ignored(&[0x50, 0x02, 0x12, 0x34, 0xb5, b'a']),
            "NON, bad option"
        );
        assert!(matches!(
            classify(&[0x40, 0x00, 0x12, 0x34]),
            Inbound::Reset {
                malformed: false,
                ..
            }
        ));
        assert!(matches!(
            classify(&[0x60, 0x00, 0x12, 0x34]),
            Inbound::Ignore { malformed: false }
        ));
    }

    #[test]
    fn a_marker_inside_an_option_value_is_not_a_payload_marker() {
        let mut packet = post(&["api", "v1", "provision"]);
        packet.add_option(CoapOption::ContentFormat, vec![0xff]);
        packet.payload.clear();
        let datagram = bytes(&packet);
        assert_eq!(datagram.last(), Some(&0xff));
        assert!(matches!(classify(&datagram), Inbound::Request(_)));
        let mut long = post(&["a-segment-longer-than-13", "v1"]);
        long.add_option(CoapOption::Size1, vec![0xff]);
        long.payload.clear();
        assert!(matches!(classify(&bytes(&long)), Inbound::Request(_)));
    }

    #[test]
    fn provisioning_paths_match_thingsboard() {
        assert!(is_provision_path(&post(&["api", "v1", "provision"])));
        assert!(is_provision_path(&post(&[
            "api",
            "v1",
            "TOKEN",
            "provision"
        ])));
        assert!(!is_provision_path(&post(&["api", "v1"])));
        assert!(!is_provision_path(&post(&["api", "v2", "provision"])));
        assert!(!is_provision_path(&post(&["api", "v1", "provision", ""])));
        assert!(!is_provision_path(&post(&[
            "api",
            "v1",
            "a",
            "b",
            "provision"
        ])));
    }

    #[test]
    fn replies_echo_token_and_message_id() {
        let exchange = Exchange {
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            message_id: 0x1234,
            confirmable: true,
            token: vec![9, 8, 7],
        };
        let reply = Reply::json(code::CREATED, "{}".into());
        let ack = Packet::from_bytes(&encode(&exchange, &reply, 77)).unwrap();
        assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(ack.header.message_id, 0x1234);
        assert_eq!(ack.get_token(), &[9, 8, 7]);
        assert_eq!(u8::from(ack.header.code), code::CREATED);
        assert_eq!(
            first_option(&ack, 12).and_then(uint),
            Some(u32::from(CONTENT_FORMAT_JSON))
        );
        let non = Exchange {
            confirmable: false,
            ..exchange
        };
        let reply = Packet::from_bytes(&encode(&non, &reply, 77)).unwrap();
        assert_eq!(reply.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(reply.header.message_id, 77);
        assert_eq!(reset(0x1234), [0x70, 0x00, 0x12, 0x34]);
        assert_eq!(uint_bytes(0), Vec::<u8>::new());
        assert_eq!(uint_bytes(65536), vec![1, 0, 0]);
    }
}
