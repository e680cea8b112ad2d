//! Every combination of the seed's variable table, over MQTT, HTTP and CoAP: the request the
//! variables describe, the stored file field by field (TB-REFERENCE §12.4), and a second start
//! that does not contact the server.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::Value;

use super::{
    TRANSPORTS, agent_to, closed_port, key_secret, provisioned_name, start, stored, stored_text,
    succeeded,
};
use crate::TestServer;

/// The value of one variable in one run, unique per transport and combination.
fn value(var: &str, transport: &str, n: usize) -> String {
    format!("{}-{transport}-{n}", var.to_lowercase())
}

/// Python's rendering of a credentials value, members in the server's order.
fn python(value: &Value) -> String {
    match value {
        Value::Object(m) => format!(
            r#"{{"clientId": {}, "userName": {}, "password": {}}}"#,
            m["clientId"], m["userName"], m["password"]
        ),
        other => other.to_string(),
    }
}

#[test]
fn every_variable_combination_provisions_over_every_transport() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let combinations: &[&[&str]] = &[
        &[],
        &["NAME"],
        &["NAME", "ACCESS_TOKEN"],
        &["NAME", "USERNAME"],
        &["NAME", "CLIENT_ID"],
        &["NAME", "PASSWORD"],
        &["NAME", "USERNAME", "PASSWORD"],
        &["NAME", "CLIENT_ID", "PASSWORD"],
        &["NAME", "CLIENT_ID", "USERNAME", "PASSWORD"],
        &["NAME", "CA_CERT_FILENAME"],
        &["NAME", "ACCESS_TOKEN", "USERNAME", "CA_CERT_FILENAME"],
        &["NAME", "USERNAME", "PASSWORD", "CA_CERT_FILENAME"],
    ];
    for transport in TRANSPORTS {
        for (n, combination) in combinations.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let names: Vec<String> = combination
                .iter()
                .map(|var| format!("TB_GW_PROVISIONING_DEVICE_{var}"))
                .collect();
            let values: Vec<String> = combination
                .iter()
                .map(|var| match *var {
                    "CA_CERT_FILENAME" => "ca.pem".to_string(),
                    var => value(var, transport, n),
                })
                .collect();
            let mut vars = key_secret(&key, &secret);
            vars.extend(
                names
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().map(String::as_str)),
            );
            let given = |var: &str| {
                combination
                    .iter()
                    .position(|v| *v == var)
                    .map(|i| values[i].clone())
            };
            let context = format!("{transport} {combination:?}");

            let out = succeeded(&start(&server, transport, dir.path(), &vars));
            let name = provisioned_name(&out);
            match given("NAME") {
                Some(wanted) => assert_eq!(name, wanted, "{context}"),
                None => assert!(
                    name.starts_with("Gateway ") && name.len() == 13,
                    "{context}: {name}"
                ),
            }
            let device = server
                .device(&name)
                .unwrap_or_else(|| panic!("{context}: no device"));
            assert_eq!(device["gateway"], true, "{context}");
            assert_eq!(device["provisionState"], "provisioned", "{context}");

            // The file, field by field, and byte for byte as the gateway writes it.
            let file = stored(dir.path());
            let kind = device["credentialsType"].as_str().unwrap();
            assert_eq!(file["status"], "SUCCESS", "{context}");
            assert_eq!(file["credentialsType"], kind, "{context}");
            assert_eq!(
                file["credentialsValue"], device["credentialsValue"],
                "{context}"
            );
            let mut expected = format!(
                r#"{{"credentialsValue": {}, "credentialsType": "{kind}", "status": "SUCCESS""#,
                python(&device["credentialsValue"])
            );
            let mode = std::fs::metadata(dir.path().join(".credentials"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{context}");
            let expected_kind = if given("ACCESS_TOKEN").is_some() {
                "ACCESS_TOKEN"
            } else if given("USERNAME")
                .or(given("PASSWORD"))
                .or(given("CLIENT_ID"))
                .is_some()
            {
                "MQTT_BASIC"
            } else if given("CA_CERT_FILENAME").is_some() {
                "X509_CERTIFICATE"
            } else {
                "ACCESS_TOKEN"
            };
            assert_eq!(kind, expected_kind, "{context}");
            match kind {
                "ACCESS_TOKEN" => match given("ACCESS_TOKEN") {
                    Some(token) => assert_eq!(file["credentialsValue"], token.as_str()),
                    None => assert_eq!(file["credentialsValue"].as_str().unwrap().len(), 20),
                },
                "MQTT_BASIC" => {
                    let v = &file["credentialsValue"];
                    assert_eq!(
                        v["clientId"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        given("CLIENT_ID"),
                        "{context}"
                    );
                    assert_eq!(
                        v["password"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        given("PASSWORD"),
                        "{context}"
                    );
                    match given("USERNAME") {
                        Some(user) => assert_eq!(v["userName"], user.as_str(), "{context}"),
                        // Filled in only where the server would refuse the request.
                        None if given("PASSWORD").is_some() => {
                            assert_eq!(v["userName"].as_str().unwrap().len(), 15, "{context}")
                        }
                        None => assert!(
                            v["userName"].as_str().unwrap_or_default().is_empty(),
                            "{context}"
                        ),
                    }
                }
                _ => {
                    assert_eq!(file["caCert"], "ca.pem", "{context}");
                    expected.push_str(r#", "caCert": "ca.pem""#);
                    assert!(
                        dir.path().join("cert.pem").is_file()
                            && dir.path().join("key.pem").is_file()
                    );
                }
            }
            expected.push('}');
            assert_eq!(stored_text(dir.path()), expected, "{context}");

            // A second start uses the file and contacts nobody: the port is closed and one
            // attempt is all it may make.
            let again = agent_to(dir.path(), transport, closed_port(), &["--once"], &vars)
                .output()
                .unwrap();
            let out = succeeded(&again);
            assert!(out.contains("using stored credentials"), "{context}: {out}");
            assert!(out.contains(kind), "{context}: {out}");
        }
    }
}
