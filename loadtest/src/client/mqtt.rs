//! One device's MQTT provisioning flow, as the ThingsBoard SDKs do it: a new connection, CONNECT
//! with user name `provision`, SUBSCRIBE `/provision/response`, PUBLISH the request at QoS 1 on
//! `/provision/request`, wait for the response, DISCONNECT. 3.1.1 or 5, TCP or TLS. The few
//! packets a device sends are encoded here; what comes back is read by type only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Outcome, io_reason};

const REQUEST_TOPIC: &str = "/provision/request";
const RESPONSE_TOPIC: &str = "/provision/response";
/// Largest packet accepted from the server.
const MAX_PACKET_BYTES: usize = 1 << 20;

/// How to reach the server.
#[derive(Clone)]
pub enum Connect {
    /// Plain TCP.
    Tcp(SocketAddr),
    /// TLS.
    Tls(
        SocketAddr,
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    ),
}

/// Runs one flow within `timeout`. `body` None: connect and disconnect only.
pub async fn flow(
    connect: &Connect,
    v5: bool,
    client_id: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout(timeout, flow_inner(connect, v5, client_id, body)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed("timeout".into()),
    }
}

async fn flow_inner(connect: &Connect, v5: bool, client_id: &str, body: Option<&[u8]>) -> Outcome {
    match connect {
        Connect::Tcp(addr) => match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                session(stream, v5, client_id, body).await
            }
            Err(e) => Outcome::ConnectFailed(io_reason(&e)),
        },
        Connect::Tls(addr, config, name) => {
            let stream = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => return Outcome::ConnectFailed(io_reason(&e)),
            };
            let _ = stream.set_nodelay(true);
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            match connector.connect(name.clone(), stream).await {
                Ok(tls) => session(tls, v5, client_id, body).await,
                Err(e) => Outcome::ConnectFailed(format!("TLS: {e}")),
            }
        }
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    v5: bool,
    client_id: &str,
    body: Option<&[u8]>,
) -> Outcome {
    match exchange(stream, v5, client_id, body).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    v5: bool,
    client_id: &str,
    body: Option<&[u8]>,
) -> Result<Outcome, String> {
    let mut stream = BufReader::new(stream);
    send(&mut stream, &connect_packet(v5, client_id)).await?;
    let (first, ack) = read_packet(&mut stream).await?;
    if first >> 4 != 2 || ack.len() < 2 {
        return Err(format!("expected CONNACK, got packet type {}", first >> 4));
    }
    if ack[1] != 0 {
        return Ok(Outcome::Refused(format!("CONNACK code 0x{:02x}", ack[1])));
    }
    let Some(body) = body else {
        send(&mut stream, &[0xE0, 0x00]).await?;
        return Ok(Outcome::Success(None));
    };
    let mut packets = subscribe_packet(v5);
    packets.extend_from_slice(&publish_packet(v5, body));
    send(&mut stream, &packets).await?;
    let outcome = loop {
        let (first, packet) = read_packet(&mut stream).await?;
        match first >> 4 {
            // SUBACK: a refusal code means the response may still come (SPEC §5), so read on.
            9 | 4 => {}
            3 => {
                let (topic, id, payload) = parse_publish(first, &packet, v5)?;
                if let Some(id) = id {
                    let [hi, lo] = id.to_be_bytes();
                    send(&mut stream, &[0x40, 0x02, hi, lo]).await?;
                }
                if topic == RESPONSE_TOPIC {
                    break Outcome::from_body(payload);
                }
            }
            14 => {
                let reason = packet.first().copied().unwrap_or(0);
                break Outcome::Refused(format!("DISCONNECT 0x{reason:02x}"));
            }
            other => return Err(format!("unexpected packet type {other}")),
        }
    };
    let _ = send(&mut stream, &[0xE0, 0x00]).await;
    let _ = stream.get_mut().shutdown().await;
    Ok(outcome)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    bytes: &[u8],
) -> Result<(), String> {
    let s = stream.get_mut();
    s.write_all(bytes).await.map_err(|e| io_reason(&e))?;
    s.flush().await.map_err(|e| io_reason(&e))
}

/// Reads one packet: its first byte and its body.
async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
) -> Result<(u8, Vec<u8>), String> {
    let first = stream.read_u8().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "connection closed by the server".to_string(),
        _ => io_reason(&e),
    })?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = stream.read_u8().await.map_err(|e| io_reason(&e))?;
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err("bad remaining length".into());
        }
    }
    if len > MAX_PACKET_BYTES {
        return Err("packet too large".into());
    }
    let mut body = vec![0; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| io_reason(&e))?;
    Ok((first, body))
}

fn parse_publish(first: u8, p: &[u8], v5: bool) -> Result<(&str, Option<u16>, &[u8]), String> {
    let short = || "short PUBLISH".to_string();
    let tlen = usize::from(u16::from_be_bytes([
        *p.first().ok_or_else(short)?,
        *p.get(1).ok_or_else(short)?,
    ]));
    let topic = std::str::from_utf8(p.get(2..2 + tlen).ok_or_else(short)?)
        .map_err(|_| "topic not UTF-8".to_string())?;
    let mut at = 2 + tlen;
    let id = if (first >> 1) & 3 > 0 {
        let id = u16::from_be_bytes([
            *p.get(at).ok_or_else(short)?,
            *p.get(at + 1).ok_or_else(short)?,
        ]);
        at += 2;
        Some(id)
    } else {
        None
    };
    if v5 {
        let (plen, used) = varint(p.get(at..).ok_or_else(short)?).ok_or_else(short)?;
        at += used + plen;
    }
    Ok((topic, id, p.get(at..).ok_or_else(short)?))
}

fn varint(src: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in src.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT: clean session, user name `provision`, keep-alive 60 s.
fn connect_packet(v5: bool, client_id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    put_str(&mut b, b"MQTT");
    b.push(if v5 { 5 } else { 4 });
    b.push(0x82);
    b.extend_from_slice(&60u16.to_be_bytes());
    if v5 {
        b.push(0);
    }
    put_str(&mut b, client_id.as_bytes());
    put_str(&mut b, b"provision");
    packet(0x10, &b)
}

fn subscribe_packet(v5: bool) -> Vec<u8> {
    let mut b = vec![0, 1];
    if v5 {
        b.push(0);
    }
    put_str(&mut b, RESPONSE_TOPIC.as_bytes());
    b.push(1);
    packet(0x82, &b)
}

fn publish_packet(v5: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + 32);
    put_str(&mut b, REQUEST_TOPIC.as_bytes());
    b.extend_from_slice(&2u16.to_be_bytes());
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    packet(0x32, &b)
}
