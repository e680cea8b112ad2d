//! SPEC §2, §3 and §5 over MQTT with the raw-packet client: every credentials type, the refusal
//! bodies, QoS rules, PUBACK before response, subscriptions, several requests per connection,
//! protobuf, parse errors and the close after the last response, on 3.1.1 and 5.

use prost::Message;
use serde_json::{Value, json};

use provisiond::transport::proto::{
    CredentialsDataProto, CredentialsTypeProto, ProvisionDeviceCredentialsMsg,
    ProvisionDeviceRequestMsg, ValidateBasicMqttCredRequestMsg, ValidateDeviceTokenRequestMsg,
    ValidateDeviceX509CertRequestMsg,
};

use super::client::{Prop, VERSIONS};
use super::{Client, Connect, FAILURE, Fixture, NOT_FOUND, Packet, Version, text, token_body};

/// A certificate as devices send it in `hash`: PEM with armour and line breaks.
const CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUJ1\nZm9vYmFy\n-----END CERTIFICATE-----\n";
/// What SPEC §1 makes of it: armour and CR/LF removed.
const CERT_VALUE: &str = "MIIBszCCAVmgAwIBAgIUJ1Zm9vYmFy";

#[test]
fn every_credentials_type_is_provisioned_on_both_versions() {
    let f = Fixture::start();
    for version in VERSIONS {
        let v = format!("{version:?}");
        let mut client = Client::provisioning(f.addr(), version);

        // No credentials: a generated 20-character token, and a replay returns it again.
        let generated = text(client.request(1, 1, &f.request(&format!("gen-{v}"), json!({}))));
        let reply: Value = serde_json::from_str(&generated).unwrap();
        let token = reply["credentialsValue"].as_str().unwrap().to_string();
        assert_eq!(token.len(), 20);
        assert_eq!(generated, token_body(&token));
        let replay = client.request(1, 2, &f.request(&format!("gen-{v}"), json!({})));
        assert_eq!(text(replay), token_body(&token));

        // A requested access token.
        let wanted = format!("token-{v}");
        let body = f.request(
            &format!("tok-{v}"),
            json!({"credentialsType": "ACCESS_TOKEN", "token": wanted}),
        );
        assert_eq!(text(client.request(1, 3, &body)), token_body(&wanted));

        // MQTT basic: `username` in, `userName` out, nested object, ThingsBoard's key order.
        let body = f.request(
            &format!("basic-{v}"),
            json!({"credentialsType": "MQTT_BASIC", "clientId": format!("c-{v}"),
                   "username": format!("u-{v}"), "password": "p"}),
        );
        assert_eq!(
            text(client.request(1, 4, &body)),
            format!(
                r#"{{"credentialsValue":{{"clientId":"c-{v}","userName":"u-{v}","password":"p"}},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}}"#
            )
        );

        // X.509: the value is the certificate without armour or newlines (SPEC §1).
        let name = format!("x509-{v}");
        let pem = CERT_PEM.replace("Zm9v", &format!("Zm9v{v}"));
        let value = CERT_VALUE.replace("Zm9v", &format!("Zm9v{v}"));
        let body = f.request(
            &name,
            json!({"credentialsType": "X509_CERTIFICATE", "hash": pem}),
        );
        assert_eq!(
            text(client.request(1, 5, &body)),
            format!(
                r#"{{"credentialsValue":"{value}","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}}"#
            )
        );
        let stored = f.server.device(&name).expect("X.509 device stored");
        assert_eq!(stored["credentialsValue"], value);
        assert_eq!(stored["credentialsId"], sha3_hex(&value));
    }
}

#[test]
fn refusals_get_thingsboards_not_found_and_failure_bodies() {
    let f = Fixture::start();
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        let wrong_secret = json!({"deviceName": "a", "provisionDeviceKey": f.key,
                                  "provisionDeviceSecret": "wrong"});
        let unknown_key = json!({"deviceName": "a", "provisionDeviceKey": "nope",
                                 "provisionDeviceSecret": f.secret});
        let cases: [(Vec<u8>, &str); 5] = [
            (wrong_secret.to_string().into_bytes(), NOT_FOUND),
            (unknown_key.to_string().into_bytes(), NOT_FOUND),
            (f.request("   ", json!({})), FAILURE),
            (
                f.request(
                    "b",
                    json!({"credentialsType": "MQTT_BASIC", "password": "only"}),
                ),
                FAILURE,
            ),
            (
                f.request("c", json!({"token": "taken"})),
                &token_body("taken"),
            ),
        ];
        for (packet_id, (body, expected)) in (1..).zip(cases) {
            assert_eq!(
                text(client.request(1, packet_id, &body)),
                expected,
                "{version:?}"
            );
        }
        // The same token for another device is refused and leaves nothing behind.
        let clash = f.request(&format!("d-{version:?}"), json!({"token": "taken"}));
        assert_eq!(text(client.request(0, 0, &clash)), FAILURE);
        assert!(f.server.device(&format!("d-{version:?}")).is_none());
    }
    assert!(f.server.device("a").is_none() && f.server.device("b").is_none());
}

#[test]
fn the_response_qos_follows_the_subscription_or_is_1_without_one() {
    let f = Fixture::start();
    for version in VERSIONS {
        // (requested subscription QoS or none, expected SUBACK code, expected response QoS)
        let cases: [(Option<u8>, u8, u8); 4] = [
            (None, 0, 1),
            (Some(0), 0, 0),
            (Some(1), 1, 1),
            (Some(2), 1, 1),
        ];
        for (n, (subscription, granted, response_qos)) in cases.into_iter().enumerate() {
            for request_qos in [0u8, 1] {
                let mut client = Client::provisioning(f.addr(), version);
                if let Some(qos) = subscription {
                    let codes = client.subscribe_ack(7, &[("/provision/response", qos)]);
                    assert_eq!(codes, [granted], "{version:?} SUBACK for QoS {qos}");
                }
                let name = format!("qos-{version:?}-{n}-{request_qos}");
                client.publish(
                    "/provision/request",
                    request_qos,
                    9,
                    &f.request(&name, json!({})),
                );
                if request_qos == 1 {
                    assert_eq!(
                        client.recv(),
                        Some(Packet::PubAck {
                            packet_id: 9,
                            reason: 0
                        }),
                        "the PUBACK comes first"
                    );
                }
                match client.recv() {
                    Some(Packet::Publish {
                        topic,
                        qos,
                        retain,
                        packet_id,
                        payload,
                    }) => {
                        assert_eq!(topic, "/provision/response");
                        assert_eq!(qos, response_qos, "{version:?} {subscription:?}");
                        assert!(!retain);
                        assert_eq!(packet_id.is_some(), qos == 1);
                        let reply: Value = serde_json::from_slice(&payload).unwrap();
                        assert_eq!(reply["status"], "SUCCESS");
                        if let Some(id) = packet_id {
                            client.puback(id);
                        }
                    }
                    other => panic!("expected the response, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn pipelined_requests_on_one_connection_are_acknowledged_then_answered_in_order() {
    let f = Fixture::start();
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        assert_eq!(client.subscribe_ack(1, &[("/provision/response", 1)]), [1]);
        let n = 10u16;
        for i in 1..=n {
            let name = format!("pipe-{version:?}-{i}");
            let body = f.request(&name, json!({"token": name}));
            client.publish("/provision/request", 1, i, &body);
        }
        let mut acked = Vec::new();
        let mut answered = Vec::new();
        while answered.len() < n as usize {
            match client.recv() {
                Some(Packet::PubAck { packet_id, reason }) => {
                    assert_eq!(reason, 0);
                    acked.push(packet_id);
                }
                Some(Packet::Publish {
                    payload, packet_id, ..
                }) => {
                    let reply: Value = serde_json::from_slice(&payload).unwrap();
                    let token = reply["credentialsValue"].as_str().unwrap().to_string();
                    let i: u16 = token.rsplit('-').next().unwrap().parse().unwrap();
                    assert!(acked.contains(&i), "PUBACK {i} precedes its response");
                    answered.push(i);
                    client.puback(packet_id.unwrap());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let in_order: Vec<u16> = (1..=n).collect();
        assert_eq!(acked, in_order);
        assert_eq!(answered, in_order);
    }
}

#[test]
fn unsubscribe_ping_and_a_second_subscription_keep_the_session_working() {
    let f = Fixture::start();
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        assert_eq!(client.subscribe_ack(1, &[("/provision/response", 0)]), [0]);
        client.ping();
        assert_eq!(client.recv(), Some(Packet::PingResp));
        let codes = client.unsubscribe_ack(2, &["/provision/response", "/provision/response"]);
        match version {
            // 3.1.1 UNSUBACK has no codes; MQTT 5 says which subscription existed.
            Version::V311 => assert!(codes.is_empty()),
            Version::V5 => assert_eq!(codes, [0x00, 0x11]),
        }
        // Unsubscribed: the response still comes, now at QoS 1 (as without a subscription).
        let name = format!("unsub-{version:?}");
        client.publish("/provision/request", 0, 0, &f.request(&name, json!({})));
        match client.recv() {
            Some(Packet::Publish { qos, packet_id, .. }) => {
                assert_eq!(qos, 1);
                client.puback(packet_id.unwrap());
            }
            other => panic!("expected the response, got {other:?}"),
        }
        // The Arduino SDK's order: subscribe, publish at QoS 0, read, unsubscribe.
        assert_eq!(client.subscribe_ack(3, &[("/provision/response", 1)]), [1]);
        let reply = text(client.request(0, 0, &f.request(&name, json!({}))));
        assert!(reply.contains(r#""status":"SUCCESS""#), "{reply}");
        client.unsubscribe_ack(4, &["/provision/response"]);
        client.disconnect();
        assert_eq!(client.until_closed(), []);
    }
}

#[test]
fn protobuf_requests_get_thingsboards_protobuf_bytes_for_the_rest_of_the_session() {
    let f = Fixture::start();
    for version in VERSIONS {
        let v = format!("{version:?}");
        let mut client = Client::provisioning(f.addr(), version);
        let proto = |name: &str, kind: CredentialsTypeProto, data: Option<CredentialsDataProto>| {
            ProvisionDeviceRequestMsg {
                device_name: name.to_string(),
                credentials_type: kind as i32,
                provision_device_credentials_msg: Some(ProvisionDeviceCredentialsMsg {
                    provision_device_key: f.key.clone(),
                    provision_device_secret: f.secret.clone(),
                }),
                credentials_data_proto: data,
                gateway: false,
            }
            .encode_to_vec()
        };

        // ACCESS_TOKEN: type 0 is not serialized: 08 01 1A <len> <token> (TB-REFERENCE §5.2).
        let token = format!("pb-token-{v}");
        let request = proto(
            &format!("pb-{v}"),
            CredentialsTypeProto::AccessToken,
            Some(CredentialsDataProto {
                validate_device_token_request_msg: Some(ValidateDeviceTokenRequestMsg {
                    token: token.clone(),
                }),
                ..Default::default()
            }),
        );
        let mut expected = vec![0x08, 0x01, 0x1A, token.len() as u8];
        expected.extend_from_slice(token.as_bytes());
        assert_eq!(client.request(1, 1, &request), expected);

        // MQTT_BASIC: 08 01 10 02 1A <len> <JSON text>.
        let request = proto(
            &format!("pb-basic-{v}"),
            CredentialsTypeProto::MqttBasic,
            Some(CredentialsDataProto {
                validate_basic_mqtt_cred_request_msg: Some(ValidateBasicMqttCredRequestMsg {
                    client_id: format!("pc-{v}"),
                    user_name: format!("pu-{v}"),
                    password: "pp".into(),
                }),
                ..Default::default()
            }),
        );
        let json_text = format!(r#"{{"clientId":"pc-{v}","userName":"pu-{v}","password":"pp"}}"#);
        let mut expected = vec![0x08, 0x01, 0x10, 0x02, 0x1A, json_text.len() as u8];
        expected.extend_from_slice(json_text.as_bytes());
        assert_eq!(client.request(1, 2, &request), expected);

        // X509_CERTIFICATE: 08 01 10 01 1A <len> <base64>.
        let value = format!("{CERT_VALUE}{v}");
        let request = proto(
            &format!("pb-x509-{v}"),
            CredentialsTypeProto::X509Certificate,
            Some(CredentialsDataProto {
                validate_device_x509_cert_request_msg: Some(ValidateDeviceX509CertRequestMsg {
                    hash: format!(
                        "-----BEGIN CERTIFICATE-----\n{value}\n-----END CERTIFICATE-----\n"
                    ),
                }),
                ..Default::default()
            }),
        );
        let mut expected = vec![0x08, 0x01, 0x10, 0x01, 0x1A, value.len() as u8];
        expected.extend_from_slice(value.as_bytes());
        assert_eq!(client.request(1, 3, &request), expected);

        // Refusals: only the status is set.
        let mut wrong = ProvisionDeviceRequestMsg::decode(request.as_slice()).unwrap();
        if let Some(keys) = wrong.provision_device_credentials_msg.as_mut() {
            keys.provision_device_secret = "wrong".into();
        }
        assert_eq!(client.request(1, 4, &wrong.encode_to_vec()), [0x08, 0x02]);
        let blank = proto("  ", CredentialsTypeProto::AccessToken, None);
        assert_eq!(client.request(1, 5, &blank), [0x08, 0x03]);

        // Sticky: a JSON request later in this session is answered in protobuf too.
        let reply = client.request(1, 6, &f.request(&format!("pb-{v}"), json!({})));
        let mut expected = vec![0x08, 0x01, 0x1A, token.len() as u8];
        expected.extend_from_slice(token.as_bytes());
        assert_eq!(reply, expected);

        // A new session starts in JSON again.
        let mut fresh = Client::provisioning(f.addr(), version);
        let reply = text(fresh.request(1, 1, &f.request(&format!("pb-{v}"), json!({}))));
        assert_eq!(reply, token_body(&token));
    }
}

#[test]
fn unparsable_requests_are_answered_and_the_session_stays_open() {
    let f = Fixture::start();
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        let cases: [&[u8]; 3] = [
            b"{\"provisionDeviceKey\": ",
            b"{\"deviceName\":\"x\"}",
            b"{\"provisionDeviceKey\":\"k\",\"provisionDeviceSecret\":\"s\",\"credentialsType\":\"PLAIN\"}",
        ];
        for (packet_id, payload) in (1..).zip(cases) {
            client.publish("/provision/request", 1, packet_id, payload);
            let expected_reason = match version {
                Version::V311 => 0,
                Version::V5 => 0x99,
            };
            assert_eq!(
                client.recv(),
                Some(Packet::PubAck {
                    packet_id,
                    reason: expected_reason
                })
            );
            let reply: Value = serde_json::from_slice(&client.response()).unwrap();
            assert_eq!(reply["status"], "FAILURE");
            let message = reply["errorMsg"].as_str().unwrap();
            assert!(!message.is_empty() && !message.contains("provisionDeviceSecret\":"));
            assert_eq!(reply.as_object().unwrap().len(), 2, "{reply}");
        }
        // The session is still usable.
        let name = format!("after-garbage-{version:?}");
        let reply = text(client.request(1, 9, &f.request(&name, json!({}))));
        assert!(reply.contains("SUCCESS"), "{reply}");

        // Bytes that are neither JSON nor protobuf: the protobuf FAILURE, and protobuf from then on.
        client.publish("/provision/request", 0, 0, &[0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(client.response(), [0x08, 0x03]);
        let reply = client.request(0, 0, &f.request(&name, json!({})));
        assert_eq!(reply[..2], [0x08, 0x01]);
    }
    assert!(f.server.device("x").is_none());
}

#[test]
fn a_session_is_closed_without_disconnect_after_its_last_response() {
    let f = Fixture::start_with(|c| c.mqtt.close_after_response_ms = 300);
    for version in VERSIONS {
        let mut client = Client::provisioning(f.addr(), version);
        let reply = text(client.request(1, 1, &f.request("closing", json!({}))));
        assert!(reply.contains("SUCCESS"));
        // ThingsBoard closes the socket without a DISCONNECT packet, even on MQTT 5.
        assert_eq!(client.until_closed(), []);
    }
}

#[test]
fn connack_accepts_provisioning_sessions_and_mqtt5_advertises_every_limit() {
    let f = Fixture::start();
    // Client id `provision` alone makes a provisioning session; the password is ignored.
    for version in VERSIONS {
        let mut client = super::Client::open(f.addr(), version);
        let connect = Connect {
            client_id: "provision",
            username: Some("someone-else"),
            password: Some(b"whatever"),
            keep_alive: 0,
        };
        assert_eq!(client.handshake(&connect), 0);
        let reply = text(client.request(1, 1, &f.request(&format!("cid-{version:?}"), json!({}))));
        assert!(reply.contains("SUCCESS"));
    }

    let mut client = super::Client::open(f.addr(), Version::V5);
    client.send_connect(&Connect::provision());
    let Some(Packet::ConnAck {
        session_present,
        code,
        props,
    }) = client.recv()
    else {
        panic!("expected CONNACK")
    };
    assert_eq!((session_present, code), (false, 0));
    assert_eq!(props.get(&0x24), Some(&Prop::Byte(1)), "maximum QoS 1");
    assert_eq!(props.get(&0x21), Some(&Prop::U16(16)), "receive maximum");
    assert_eq!(
        props.get(&0x27),
        Some(&Prop::U32(65536)),
        "maximum packet size"
    );
    assert_eq!(
        props.get(&0x28),
        Some(&Prop::Byte(0)),
        "no wildcard subscriptions"
    );
    assert_eq!(
        props.get(&0x2A),
        Some(&Prop::Byte(0)),
        "no shared subscriptions"
    );
    assert!(
        props.get(&0x22).is_none_or(|p| *p == Prop::U16(0)),
        "no topic aliases"
    );
    match props.get(&0x12) {
        Some(Prop::Bytes(id)) => assert!(id.starts_with(b"provision-")),
        other => panic!("an empty client id gets one assigned, got {other:?}"),
    }

    assert!(
        !props.contains_key(&0x13),
        "keep-alive 60 is accepted as it is"
    );

    let mut no_keep_alive = super::Client::open(f.addr(), Version::V5);
    no_keep_alive.send_connect(&Connect {
        keep_alive: 0,
        ..Connect::provision()
    });
    match no_keep_alive.recv() {
        Some(Packet::ConnAck { code: 0, props, .. }) => {
            assert_eq!(props.get(&0x13), Some(&Prop::U16(60)), "server keep-alive")
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }

    let mut named = super::Client::open(f.addr(), Version::V5);
    named.send_connect(&Connect {
        client_id: "device-17",
        ..Connect::provision()
    });
    match named.recv() {
        Some(Packet::ConnAck { code: 0, props, .. }) => assert!(!props.contains_key(&0x12)),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn sha3_hex(text: &str) -> String {
    use sha3::Digest;
    hex::encode(sha3::Sha3_256::digest(text.as_bytes()))
}
