//! The TLS listener with a test CA generated at test time: both MQTT versions, X.509
//! provisioning on both listeners (value and id per SPEC §1), client-certificate verification
//! against the configured CA, and start-up errors that name the bad file.

use serde_json::json;

use super::client::VERSIONS;
use super::pki::Pki;
use super::{Client, Connect, Fixture, Version, text};
use provisiond::config::{Config, Overrides};

/// SPEC §1: the certificate without armour and CR/LF, and its lowercase SHA3-256 hex.
fn x509_value_and_id(pem: &str) -> (String, String) {
    use sha3::Digest;
    let value: String = pem
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .replace(['\r', '\n'], "");
    let id = hex::encode(sha3::Sha3_256::digest(value.as_bytes()));
    (value, id)
}

#[test]
fn x509_provisioning_works_on_the_plain_and_the_tls_listener() {
    let pki = Pki::generate();
    let f = Fixture::start_with(|c| pki.configure(c));
    let tls = pki.client_config(None);
    for version in VERSIONS {
        for over_tls in [false, true] {
            let mut client = if over_tls {
                Client::open_tls(f.server.mqtt_tls_addr(), version, tls.clone())
            } else {
                Client::open(f.addr(), version)
            };
            assert_eq!(client.handshake(&Connect::provision()), 0);
            // Each device brings its own certificate, as the gateway does (rcgen: EC P-256).
            let device = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let pem = device.cert.pem();
            let (value, id) = x509_value_and_id(&pem);
            let name = format!("x509-{version:?}-{over_tls}");
            let body = f.request(
                &name,
                json!({"credentialsType": "X509_CERTIFICATE", "hash": pem}),
            );
            assert_eq!(
                text(client.request(1, 1, &body)),
                format!(
                    r#"{{"credentialsValue":"{value}","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}}"#
                )
            );
            let stored = f.server.device(&name).expect("stored");
            assert_eq!(stored["credentialsType"], "X509_CERTIFICATE");
            assert_eq!(stored["credentialsId"], id);
            assert_eq!(stored["credentialsValue"], value);
            // The same certificate for another device is refused.
            let clash = f.request(
                &format!("{name}-clash"),
                json!({"credentialsType": "X509_CERTIFICATE", "hash": pem}),
            );
            assert_eq!(text(client.request(0, 0, &clash)), super::FAILURE);
        }
    }
}

#[test]
fn client_certificates_are_verified_against_the_configured_ca() {
    let pki = Pki::generate();
    for required in [false, true] {
        let f = Fixture::start_with(|c| {
            pki.configure(c);
            c.mqtt.tls_client_ca_file = Some(pki.ca.clone());
            c.mqtt.tls_client_cert_required = required;
        });
        let addr = f.server.mqtt_tls_addr();
        // (identity, accepted)
        let cases = [
            (Some(&pki.client), true),
            (Some(&pki.stranger), false),
            (None, !required),
        ];
        for (identity, accepted) in cases {
            let mut client = Client::open_tls(addr, Version::V5, pki.client_config(identity));
            client.send_connect(&Connect::provision());
            match client.recv() {
                Some(super::Packet::ConnAck { code: 0, .. }) => assert!(
                    accepted,
                    "required={required}: a connection that should fail was accepted"
                ),
                None => assert!(
                    !accepted,
                    "required={required}: a valid connection was refused"
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Plain MQTT is unaffected by TLS client authentication.
        let mut plain = Client::provisioning(f.addr(), Version::V311);
        let reply = text(plain.request(1, 1, &f.request("plain", json!({}))));
        assert!(reply.contains("SUCCESS"));
    }
}

#[test]
fn a_bad_tls_file_fails_the_start_with_its_name() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let mut config = Config::load(None, &Overrides::default()).unwrap();
    config.data_dir = dir.path().join("data");
    config.bind = "127.0.0.1".parse().unwrap();
    config.http.port = 0;
    config.mqtt.port = 0;
    config.mqtt.tls_port = 0;
    config.admin_token = Some(super::super::ADMIN_TOKEN.into());
    config.mqtt.tls_cert_file = Some(missing.clone());
    config.mqtt.tls_key_file = Some(pki.server.key.clone());
    let error = provisiond::server::start(&config, false).unwrap_err();
    assert!(error.to_string().contains("no-such-cert.pem"), "{error}");
    // The key of another certificate.
    config.mqtt.tls_cert_file = Some(pki.server.cert.clone());
    config.mqtt.tls_key_file = Some(pki.client.key.clone());
    let error = provisiond::server::start(&config, false).unwrap_err();
    assert!(error.to_string().contains("server.pem"), "{error}");
    // With a good pair it starts, and a 3.1.1 client is served over TLS.
    config.mqtt.tls_key_file = Some(pki.server.key.clone());
    let running = provisiond::server::start(&config, false).expect("starts");
    let addr = running.mqtt_tls_addr().expect("TLS listener");
    let mut client = Client::open_tls(addr, Version::V311, pki.client_config(None));
    assert_eq!(client.handshake(&Connect::provision()), 0);
    client.ping();
    assert_eq!(client.recv(), Some(super::Packet::PingResp));
    running.stop().expect("clean stop");
}
