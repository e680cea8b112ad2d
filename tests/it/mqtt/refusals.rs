//! SPEC §5 refusals with their return and reason codes: other logins at CONNECT, filters other
//! than the response topic, other topics, QoS 2, packets over the size limit, no CONNECT in time.
//! None of them creates a device.

use serde_json::json;

use super::client::{VERSIONS, put_varint};
use super::{Client, Connect, Fixture, Packet, Version, text};

#[test]
fn other_logins_are_refused_at_connect() {
    let f = Fixture::start();
    let refused = [
        Connect {
            client_id: "device-1",
            username: Some("an-access-token"),
            password: None,
            keep_alive: 60,
        },
        Connect {
            client_id: "device-1",
            username: None,
            password: None,
            keep_alive: 60,
        },
        Connect {
            client_id: "",
            username: Some("Provision"),
            password: Some(b"provision"),
            keep_alive: 60,
        },
    ];
    for version in VERSIONS {
        for connect in &refused {
            let mut client = Client::open(f.addr(), version);
            let expected = match version {
                Version::V311 => 5,
                Version::V5 => 0x87,
            };
            assert_eq!(
                client.handshake(connect),
                expected,
                "{version:?} {connect:?}"
            );
            assert_eq!(
                client.until_closed(),
                [],
                "the refused connection is closed"
            );
        }
    }
}

#[test]
fn filters_other_than_the_response_topic_are_refused_in_the_suback() {
    let f = Fixture::start();
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        let codes = client.subscribe_ack(
            1,
            &[
                ("#", 0),
                ("/provision/response", 1),
                ("/provision/+", 1),
                ("/provision/#", 0),
                ("/provision/request", 0),
                ("/provision/response/x", 0),
            ],
        );
        // SPEC §5: 0x80 on both versions (ThingsBoard sends 0x8F on MQTT 5; clients treat any
        // code of 0x80 or above as a refusal).
        let refused = 0x80;
        assert_eq!(
            codes,
            [refused, 1, refused, refused, refused, refused],
            "{version:?}"
        );
        // Refusing a filter does not end the session.
        let reply = text(client.request(1, 2, &f.request(&format!("sub-{version:?}"), json!({}))));
        assert!(reply.contains("SUCCESS"));
    }
}

#[test]
fn publishing_to_another_topic_ends_the_session() {
    let f = Fixture::start();
    for qos in [0u8, 1] {
        for version in VERSIONS {
            let mut client = Client::provisioning(f.addr(), version);
            client.publish(
                "/provision/other",
                qos,
                5,
                &f.request("elsewhere", json!({})),
            );
            let expected = match (version, qos) {
                // 3.1.1 has no reason codes: the connection is simply closed, no PUBACK.
                (Version::V311, _) => vec![],
                (Version::V5, 0) => vec![Packet::Disconnect { reason: 0x90 }],
                (Version::V5, _) => vec![
                    Packet::PubAck {
                        packet_id: 5,
                        reason: 0x90,
                    },
                    Packet::Disconnect { reason: 0x90 },
                ],
            };
            assert_eq!(client.until_closed(), expected, "{version:?} QoS {qos}");
        }
    }
    // Publishing to the response topic is no different.
    let mut client = Client::provisioning(f.addr(), Version::V5);
    client.publish("/provision/response", 0, 0, b"{}");
    assert_eq!(client.until_closed(), [Packet::Disconnect { reason: 0x90 }]);
    assert!(f.server.device("elsewhere").is_none());
}

#[test]
fn mqtt5_enhanced_authentication_is_refused() {
    let f = Fixture::start();
    let mut client = Client::provisioning(f.addr(), Version::V5);
    // AUTH, reason 0x18 (continue authentication), no properties.
    client.send_raw(&[0xF0, 0x02, 0x18, 0x00]);
    assert_eq!(client.until_closed(), [Packet::Disconnect { reason: 0x8C }]);
}

#[test]
fn qos_2_ends_the_session_with_a_clear_reason() {
    let f = Fixture::start();
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        client.publish("/provision/request", 2, 3, &f.request("qos2", json!({})));
        let expected = match version {
            Version::V311 => vec![],
            Version::V5 => vec![Packet::Disconnect { reason: 0x9B }],
        };
        assert_eq!(client.until_closed(), expected, "{version:?}");
    }
    assert!(f.server.device("qos2").is_none());
}

#[test]
fn a_packet_over_the_size_limit_ends_the_session_and_one_at_the_limit_is_served() {
    let f = Fixture::start_with(|c| c.mqtt.max_packet_bytes = 4096);
    for version in VERSIONS {
        // PUBLISH remaining length = 2 + topic + (v5: 1 property length byte) + payload.
        let overhead = 2 + "/provision/request".len() + usize::from(version == Version::V5);
        let fits = |name: &str, total: usize| {
            let base = f.request(name, json!({"pad": ""}));
            let pad = "p".repeat(total - overhead - base.len());
            f.request(name, json!({ "pad": pad }))
        };
        let mut client = Client::provisioning(f.addr(), version);
        let at_limit = fits(&format!("big-{version:?}"), 4096);
        let reply = text(client.request(0, 0, &at_limit));
        assert!(reply.contains("SUCCESS"), "{reply}");

        let over = fits(&format!("too-big-{version:?}"), 4097);
        client.publish("/provision/request", 1, 1, &over);
        let expected = match version {
            Version::V311 => vec![],
            Version::V5 => vec![Packet::Disconnect { reason: 0x95 }],
        };
        assert_eq!(client.until_closed(), expected, "{version:?}");
        assert!(f.server.device(&format!("too-big-{version:?}")).is_none());
    }
}

#[test]
fn a_connection_without_connect_in_time_is_closed() {
    let f = Fixture::start_with(|c| c.mqtt.connect_timeout_ms = 300);
    // Silent.
    let mut silent = Client::open(f.addr(), Version::V311);
    // The first bytes of a CONNECT, then nothing (the deadline counts from the TCP accept).
    let mut dribbling = Client::open(f.addr(), Version::V5);
    dribbling.send_raw(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05]);
    assert_eq!(silent.until_closed(), []);
    assert_eq!(dribbling.until_closed(), []);

    // A PUBLISH instead of CONNECT is a protocol error: closed at once.
    let mut rude = Client::open(f.addr(), Version::V311);
    rude.publish(
        "/provision/request",
        0,
        0,
        &f.request("no-connect", json!({})),
    );
    assert_eq!(rude.until_closed(), []);
    assert!(f.server.device("no-connect").is_none());

    // A client that connects in time is served as usual.
    let mut client = Client::provisioning(f.addr(), Version::V5);
    let reply = text(client.request(1, 1, &f.request("punctual", json!({}))));
    assert!(reply.contains("SUCCESS"));
}

/// A PUBLISH whose fixed header announces `remaining` bytes, followed by only `body`.
pub fn publish_header(remaining: u32, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x30];
    put_varint(&mut packet, remaining);
    packet.extend_from_slice(body);
    packet
}
