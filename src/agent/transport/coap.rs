//! CoAP: a confirmable `POST /api/v1/provision` over UDP (coap-lite encodes the messages),
//! retransmitted as RFC 7252 §4.2 says: first after 2–3 s, then doubling, at most 4 times,
//! and never past the exchange's deadline. A piggybacked or a separate response is accepted.

use std::net::{ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use rand::Rng;

use super::Endpoint;

/// RFC 7252 §4.8 transmission parameters.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const ACK_RANDOM_FACTOR: f64 = 1.5;
const MAX_RETRANSMIT: u32 = 4;

/// One confirmable exchange; the response payload (2.01 and 4.00 both carry one).
pub fn exchange(endpoint: &Endpoint, body: &str) -> Result<String, String> {
    let target = format!("CoAP {}:{}", endpoint.host, endpoint.port);
    let peer = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: the host has no address"))?;
    let local = if peer.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("{target}: {e}"))?;
    // Connected, so that only the server's datagrams arrive and an ICMP refusal is reported.
    socket.connect(peer).map_err(|e| format!("{target}: {e}"))?;
    let mut rng = rand::rng();
    let message_id: u16 = rng.random();
    let token: [u8; 4] = rng.random();
    let request = request(message_id, &token, body)?;
    let deadline = Instant::now() + endpoint.timeout;
    let mut wait = ACK_TIMEOUT.mul_f64(rng.random_range(1.0..ACK_RANDOM_FACTOR));
    let mut buffer = vec![0u8; 65536];
    for _ in 0..=MAX_RETRANSMIT {
        socket
            .send(&request)
            .map_err(|e| format!("{target}: {e}"))?;
        let resend_at = (Instant::now() + wait).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| format!("{target}: {e}"))?;
            let len = match socket.recv(&mut buffer) {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(format!("{target}: {e}")),
            };
            let Ok(reply) = Packet::from_bytes(&buffer[..len]) else {
                continue;
            };
            match answer(&socket, &reply, message_id, &token) {
                Seen::Answer(payload) => return payload.map_err(|e| format!("{target}: {e}")),
                Seen::Reset => return Err(format!("{target} reset the exchange")),
                Seen::Acknowledged => {
                    // A separate response follows; stop retransmitting, wait until the deadline.
                    wait = deadline.saturating_duration_since(Instant::now());
                }
                Seen::Other => {}
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        wait *= 2;
    }
    Err(format!("{target}: no answer in time"))
}

fn request(message_id: u16, token: &[u8], body: &str) -> Result<Vec<u8>, String> {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(RequestType::Post);
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    for segment in ["api", "v1", "provision"] {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.set_content_format(ContentFormat::ApplicationJSON);
    packet.payload = body.as_bytes().to_vec();
    packet
        .to_bytes_unlimited()
        .map_err(|e| format!("cannot encode the CoAP request: {e:?}"))
}

enum Seen {
    Answer(Result<String, String>),
    Acknowledged,
    Reset,
    Other,
}

fn answer(socket: &UdpSocket, reply: &Packet, message_id: u16, token: &[u8]) -> Seen {
    let header = &reply.header;
    match header.get_type() {
        MessageType::Reset if header.message_id == message_id => return Seen::Reset,
        MessageType::Acknowledgement
            if header.message_id == message_id && header.code == MessageClass::Empty =>
        {
            return Seen::Acknowledged;
        }
        _ => {}
    }
    if reply.get_token() != token || !matches!(header.code, MessageClass::Response(_)) {
        return Seen::Other;
    }
    if header.get_type() == MessageType::Confirmable {
        // A separate response must be acknowledged.
        let mut ack = Packet::new();
        ack.header.set_type(MessageType::Acknowledgement);
        ack.header.message_id = header.message_id;
        if let Ok(bytes) = ack.to_bytes() {
            let _ = socket.send(&bytes);
        }
    }
    if reply.get_option(CoapOption::Block2).is_some_and(|values| {
        values
            .front()
            .and_then(|v| v.last())
            .is_some_and(|last| last & 0x08 != 0)
    }) {
        return Seen::Answer(Err(
            "the answer is block-wise, which the agent does not fetch".into(),
        ));
    }
    match header.code {
        MessageClass::Response(
            ResponseType::Created | ResponseType::Content | ResponseType::BadRequest,
        ) => Seen::Answer(
            String::from_utf8(reply.payload.clone())
                .map_err(|_| "the answer is not UTF-8".to_string()),
        ),
        MessageClass::Response(other) => Seen::Answer(Err(format!(
            "answered {other:?}, not a provisioning response"
        ))),
        _ => Seen::Other,
    }
}
