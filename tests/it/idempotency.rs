//! Concurrency: identical requests create one device; racing claims on one credentials id across
//! shards have exactly one winner and leave no orphan device.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};

use super::{TestServer, request};

/// Runs `n` requests at once (threads released together by a barrier); returns the replies.
fn race(server: &TestServer, bodies: Vec<Value>) -> Vec<Value> {
    let barrier = Arc::new(Barrier::new(bodies.len()));
    let url = server.url("/api/v1/provision");
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let barrier = barrier.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = super::agent();
                barrier.wait();
                let mut response = agent
                    .post(&url)
                    .send_json(&body)
                    .expect("request goes through");
                assert_eq!(response.status().as_u16(), 200);
                response.body_mut().read_json::<Value>().unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_identical_requests_create_one_device_with_one_credential() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    for round in 0..5 {
        let name = format!("same-{round}");
        let replies = race(&server, vec![request(&key, &secret, &name); 24]);
        let values: HashSet<String> = replies
            .iter()
            .map(|r| {
                assert_eq!(r["status"], "SUCCESS", "{r}");
                r["credentialsValue"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(values.len(), 1, "every reply carries the same token");
        let stored = server.device(&name).unwrap();
        assert_eq!(
            stored["credentialsValue"].as_str(),
            values.iter().next().map(String::as_str)
        );
    }
    assert_eq!(server.device_names("fleet").len(), 5);
}

#[test]
fn racing_claims_on_one_token_have_exactly_one_winner_and_no_orphan() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    for round in 0..10 {
        let token = format!("contested-{round}");
        // 16 different names spread over the 4 shards, all wanting the same token.
        let bodies: Vec<Value> = (0..16)
            .map(|i| {
                let mut body = request(&key, &secret, &format!("racer-{round}-{i}"));
                body["token"] = json!(token);
                body
            })
            .collect();
        let replies = race(&server, bodies);
        let winners: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r["status"] == "SUCCESS")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        for (i, reply) in replies.iter().enumerate() {
            let exists = server.device(&format!("racer-{round}-{i}")).is_some();
            assert_eq!(
                exists,
                winners.contains(&i),
                "round {round} racer {i}: {reply}"
            );
        }
        let winner = server
            .device(&format!("racer-{round}-{}", winners[0]))
            .unwrap();
        assert_eq!(winner["credentialsId"], json!(token));
    }
    assert_eq!(server.device_names("fleet").len(), 10);
}

#[test]
fn racing_mqtt_basic_and_x509_claims_have_one_winner() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let bodies: Vec<Value> = (0..12)
        .map(|i| {
            let mut body = request(&key, &secret, &format!("basic-{i}"));
            body["credentialsType"] = json!("MQTT_BASIC");
            body["clientId"] = json!("shared-client");
            body["username"] = json!("shared-user");
            body["password"] = json!(format!("pw-{i}"));
            body
        })
        .chain((0..12).map(|i| {
            let mut body = request(&key, &secret, &format!("cert-{i}"));
            body["credentialsType"] = json!("X509_CERTIFICATE");
            body["hash"] =
                json!("-----BEGIN CERTIFICATE-----\nU0hBUkVE\n-----END CERTIFICATE-----\n");
            body
        }))
        .collect();
    let replies = race(&server, bodies);
    let basic_wins = replies[..12]
        .iter()
        .filter(|r| r["status"] == "SUCCESS")
        .count();
    let cert_wins = replies[12..]
        .iter()
        .filter(|r| r["status"] == "SUCCESS")
        .count();
    assert_eq!((basic_wins, cert_wins), (1, 1), "{replies:?}");
    assert_eq!(server.device_names("fleet").len(), 2);
}

#[test]
fn many_new_devices_in_parallel_get_distinct_tokens() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let bodies: Vec<Value> = (0..64)
        .map(|i| request(&key, &secret, &format!("bulk-{i}")))
        .collect();
    let replies = race(&server, bodies);
    let tokens: HashSet<&str> = replies
        .iter()
        .map(|r| r["credentialsValue"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 64);
    assert_eq!(server.device_names("fleet").len(), 64);
}
