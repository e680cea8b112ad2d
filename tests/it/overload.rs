//! Overload answers, provoked with a one-message mailbox on one shard and no enqueue wait:
//! HTTP 503 with Retry-After, CoAP 5.03 with Max-Age, MQTT CONNACK 0x03 / 0x89; refused
//! requests write nothing, and the server serves normally once the flood stops.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use serde_json::Value;

use super::mqtt::{Client, Connect, Packet as MqttPacket, Version};
use super::{TestServer, agent, request};

/// Rounds of concurrent requests before giving up on seeing a refusal (a hang guard: with a
/// one-message mailbox the first round nearly always has some).
const MAX_ROUNDS: usize = 50;
const CLIENTS: usize = 24;

fn tiny_engine() -> TestServer {
    TestServer::start_with(|config| {
        config.engine.shards = 1;
        config.engine.mailbox_capacity = 1;
        config.engine.max_batch = 1;
        config.engine.enqueue_timeout_ms = 0;
    })
}

/// One HTTP answer: status, Retry-After, body.
type HttpAnswer = (u16, Option<String>, Value);

fn http_post(url: &str, body: &Value) -> HttpAnswer {
    let mut response = agent().post(url).send(body.to_string()).expect("answered");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.body_mut().read_to_string().unwrap();
    (status, retry, serde_json::from_str(&text).unwrap())
}

#[test]
fn http_answers_503_with_retry_after_when_the_engine_is_full_and_writes_nothing() {
    let server = tiny_engine();
    let (key, secret) = server.profile("flood", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let url = server.url("/api/v1/provision");
    let mut refused = Vec::new();
    let mut served = Vec::new();
    for round in 0..MAX_ROUNDS {
        let answers: Vec<(String, HttpAnswer)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let name = format!("r{round}-d{i}");
                    let body = request(&key, &secret, &name);
                    let url = url.clone();
                    s.spawn(move || (name, http_post(&url, &body)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, (status, retry, body)) in answers {
            match status {
                200 => {
                    assert_eq!(body["status"], "SUCCESS", "{body}");
                    served.push(name);
                }
                503 => {
                    assert_eq!(retry.as_deref(), Some("1"));
                    assert_eq!(body["status"], "FAILURE", "{body}");
                    refused.push(name);
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "no request was refused in {MAX_ROUNDS} rounds"
    );
    for name in &served {
        assert!(server.device(name).is_some(), "{name} was answered SUCCESS");
    }
    for name in &refused {
        assert!(
            server.device(name).is_none(),
            "{name} was refused but written"
        );
    }
    // The flood is over: the same refused device provisions now.
    let (status, _, body) = http_post(&url, &request(&key, &secret, &refused[0]));
    assert_eq!((status, body["status"].as_str()), (200, Some("SUCCESS")));
}

fn coap_post(server: SocketAddr, payload: &[u8], message_id: u16) -> Packet {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::from(2u8);
    packet.header.message_id = message_id;
    packet.set_token(message_id.to_be_bytes().to_vec());
    for segment in ["api", "v1", "provision"] {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.payload = payload.to_vec();
    socket.send(&packet.to_bytes().unwrap()).unwrap();
    let mut buffer = vec![0; 65_536];
    let len = socket.recv(&mut buffer).expect("a CoAP reply");
    Packet::from_bytes(&buffer[..len]).unwrap()
}

#[test]
fn coap_answers_5_03_with_max_age_when_the_engine_is_full() {
    let server = tiny_engine();
    let (key, secret) = server.profile("coap-flood", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let addr = server.coap_addr();
    let mut refused = None;
    for round in 0..MAX_ROUNDS {
        let replies: Vec<(String, Packet)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let name = format!("c{round}-{i}");
                    let body = request(&key, &secret, &name).to_string();
                    s.spawn(move || (name, coap_post(addr, body.as_bytes(), i as u16 + 1)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, reply) in replies {
            let code = u8::from(reply.header.code);
            if code == 0xa3 {
                let max_age = reply
                    .get_option(CoapOption::MaxAge)
                    .and_then(|v| v.front().cloned())
                    .expect("5.03 carries Max-Age");
                assert!(!max_age.is_empty() && max_age.iter().any(|b| *b != 0));
                refused = Some(name);
            } else {
                assert_eq!(code, 0x41, "2.01 or 5.03, got {code:#x}");
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("some request refused with 5.03");
    assert!(server.device(&refused).is_none());
}

#[test]
fn mqtt_refuses_connect_with_server_unavailable_while_the_engine_is_full() {
    let server = tiny_engine();
    let (key, secret) = server.profile("mqtt-flood", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let url = server.url("/api/v1/provision");
    let flooding = Arc::new(AtomicBool::new(true));
    let mut codes: Vec<(Version, u8)> = Vec::new();
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (url, key, secret, flooding) = (&url, &key, &secret, flooding.clone());
            s.spawn(move || {
                let mut i = 0;
                while flooding.load(Ordering::Relaxed) {
                    http_post(url, &request(key, secret, &format!("f{t}-{i}")));
                    i += 1;
                }
            });
        }
        for attempt in 0..2000 {
            let version = [Version::V311, Version::V5][attempt % 2];
            let mut client = Client::open(server.mqtt_addr(), version);
            client.send_connect(&Connect::provision());
            match client.recv() {
                Some(MqttPacket::ConnAck { code, .. }) if code != 0 => codes.push((version, code)),
                Some(MqttPacket::ConnAck { .. }) => {}
                other => panic!("expected CONNACK, got {other:?}"),
            }
            if codes.iter().any(|(v, _)| *v == Version::V311)
                && codes.iter().any(|(v, _)| *v == Version::V5)
            {
                break;
            }
        }
        flooding.store(false, Ordering::Relaxed);
    });
    for (version, code) in &codes {
        let expected = if *version == Version::V311 {
            0x03
        } else {
            0x89
        };
        assert_eq!(*code, expected, "{version:?}");
    }
    assert!(
        codes.iter().any(|(v, _)| *v == Version::V311)
            && codes.iter().any(|(v, _)| *v == Version::V5),
        "both versions were refused at least once: {codes:?}"
    );
    // Load gone: sessions are accepted again.
    let mut client = Client::open(server.mqtt_addr(), Version::V311);
    assert_eq!(client.handshake(&Connect::provision()), 0);
}
