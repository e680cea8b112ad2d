//! Reset and re-provision under both re-provision policies, and a server that is down when
//! the device starts and comes up while it retries.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use super::{
    TRANSPORTS, agent, agent_to, closed_port, failed_with, key_secret, start, stored_text,
    succeeded, texts,
};
use crate::{TestServer, binary, test_config};
use provisiond::server;

fn reset(dir: &std::path::Path) -> String {
    succeeded(&agent(dir, &["reset"], &[]).output().unwrap())
}

#[test]
fn a_reset_device_gets_the_same_credentials_back_under_return_existing() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    for transport in TRANSPORTS {
        for extra in [
            None,
            Some(("TB_GW_PROVISIONING_DEVICE_USERNAME", "user")),
            Some(("TB_GW_PROVISIONING_DEVICE_CA_CERT_FILENAME", "ca.pem")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let name = format!("returning-{transport}-{}", extra.map_or("token", |e| e.0));
            let user = format!("user-{name}");
            let mut vars = key_secret(&key, &secret);
            vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", &name));
            if let Some((var, value)) = extra {
                vars.push((
                    var,
                    if value == "user" {
                        user.as_str()
                    } else {
                        value
                    },
                ));
            }
            succeeded(&start(&server, transport, dir.path(), &vars));
            let first = stored_text(dir.path());

            let out = reset(dir.path());
            assert!(out.contains("removed"), "{out}");
            assert!(!dir.path().join(".credentials").exists());
            let out = reset(dir.path());
            assert!(out.contains("no stored credentials"), "{out}");

            let out = succeeded(&start(&server, transport, dir.path(), &vars));
            assert!(out.contains("provisioned"), "{out}");
            assert_eq!(stored_text(dir.path()), first, "{transport} {extra:?}");
        }
    }
}

#[test]
fn a_reset_device_is_refused_with_a_clear_message_under_reject() {
    let server = TestServer::start();
    let (key, secret) = server.profile("strict", "ALLOW_CREATE_NEW_DEVICES", "REJECT");
    for transport in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("rejected-{transport}");
        let mut vars = key_secret(&key, &secret);
        vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", &name));
        succeeded(&start(&server, transport, dir.path(), &vars));
        reset(dir.path());
        let line = failed_with(&start(&server, transport, dir.path(), &vars), 6);
        assert!(
            line.contains("FAILURE") && line.contains("REJECT"),
            "{line}"
        );
        assert!(!dir.path().join(".credentials").exists());
    }
}

#[test]
fn a_server_that_comes_up_while_the_agent_retries_provisions_it() {
    // The profile is made offline, on the data directory the server will serve.
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    let created = std::process::Command::new(binary())
        .args([
            "profile",
            "create",
            "fleet",
            "--key",
            "late-key",
            "--secret",
            "late-secret",
        ])
        .arg("--data-dir")
        .arg(&config.data_dir)
        .output()
        .unwrap();
    assert!(created.status.success(), "{:?}", texts(&created));

    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = key_secret("late-key", "late-secret");
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "late-device"));
    let mut child = agent_to(dir.path(), "http", port, &["--retries", "1000"], &vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = errors.next().expect("a retry line").unwrap();
    assert!(
        first.contains("attempt 1 failed") && first.contains("retrying in"),
        "{first}"
    );

    config.http.port = port;
    let running = server::start(&config, false).expect("server starts on the agent's port");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{:?}",
        errors.map(Result::unwrap).collect::<Vec<_>>()
    );
    assert!(stored_text(dir.path()).contains("ACCESS_TOKEN"));
    running.stop().unwrap();
}
