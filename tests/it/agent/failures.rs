//! Each failure is one line on standard error and its own exit code (README.md's table).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use super::{agent, agent_to, closed_port, failed_with, key_secret, start, succeeded};
use crate::TestServer;

#[test]
fn missing_key_or_secret_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for (vars, named) in [
        (
            vec![],
            "TB_GW_PROVISIONING_DEVICE_KEY and TB_GW_PROVISIONING_DEVICE_SECRET",
        ),
        (
            vec![("TB_GW_PROVISIONING_DEVICE_SECRET", "s")],
            "TB_GW_PROVISIONING_DEVICE_KEY is not set",
        ),
        (
            vec![("TB_GW_PROVISIONING_DEVICE_KEY", "k")],
            "TB_GW_PROVISIONING_DEVICE_SECRET is not set",
        ),
    ] {
        let line = failed_with(&agent(dir.path(), &["--once"], &vars).output().unwrap(), 3);
        assert!(line.contains(named), "{line}");
    }
}

#[test]
fn corrupt_or_unreadable_stored_credentials_stop_the_start_without_contacting_anyone() {
    let vars = key_secret("k", "s");
    let port = closed_port().to_string();
    let args = ["--host", "127.0.0.1", "--port", &port, "--once"];
    for content in [
        "not json",
        "[1]",
        r#"{"credentialsType": "SOMETHING"}"#,
        r#"{"credentialsType": "ACCESS_TOKEN"}"#,
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".credentials"), content).unwrap();
        let line = failed_with(&agent(dir.path(), &args, &vars).output().unwrap(), 4);
        assert!(
            line.contains(".credentials are corrupt") && line.contains("agent reset"),
            "{line}"
        );
        let line = failed_with(&agent(dir.path(), &["check"], &[]).output().unwrap(), 4);
        assert!(line.contains("corrupt"), "{line}");
    }
    // A directory where the file should be cannot be read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".credentials")).unwrap();
    let line = failed_with(&agent(dir.path(), &args, &vars).output().unwrap(), 4);
    assert!(line.contains("cannot read stored credentials"), "{line}");
}

#[test]
fn refusals_are_told_apart() {
    let server = TestServer::start();
    let (key, _) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let (pre_key, pre_secret) = server.profile(
        "preloaded",
        "CHECK_PRE_PROVISIONED_DEVICES",
        "RETURN_EXISTING",
    );
    for transport in super::TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let line = failed_with(
            &start(&server, transport, dir.path(), &key_secret(&key, "wrong")),
            5,
        );
        assert!(
            line.contains("NOT_FOUND") && line.contains("Provision data was not found!"),
            "{line}"
        );
        let mut vars = key_secret(&pre_key, &pre_secret);
        vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "never-imported"));
        let line = failed_with(&start(&server, transport, dir.path(), &vars), 6);
        assert!(
            line.contains("FAILURE") && line.contains("Failed to provision device!"),
            "{line}"
        );
        assert!(!dir.path().join(".credentials").exists());
    }
}

#[test]
fn an_unreachable_server_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    for transport in super::TRANSPORTS {
        let output = agent_to(
            dir.path(),
            transport,
            port,
            &["--retries", "2"],
            &key_secret("k", "s"),
        )
        .output()
        .unwrap();
        let line = failed_with(&output, 7);
        assert!(line.contains("no answer after 3 attempt(s)"), "{line}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains("attempt 2 failed") && err.contains("retrying in"),
            "{err}"
        );
    }
}

/// A directory this process cannot write to: mode 0555, or (for root, whom modes do not
/// stop) a directory on a file system that takes no new files.
fn read_only_dir(scratch: &std::path::Path) -> PathBuf {
    let dir = scratch.join("ro");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(dir.join("probe"), b"").is_err() {
        return dir;
    }
    PathBuf::from("/proc/self")
}

#[test]
fn a_read_only_config_dir_fails_before_the_server_is_asked() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let scratch = tempfile::tempdir().unwrap();
    let dir = read_only_dir(scratch.path());
    let mut vars = key_secret(&key, &secret);
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "read-only"));
    let line = failed_with(&start(&server, "http", &dir, &vars), 8);
    assert!(
        line.contains("cannot write to the config directory"),
        "{line}"
    );
    assert!(
        server.device("read-only").is_none(),
        "no device provisioned for nothing"
    );
}

#[test]
fn check_reports_what_is_stored_and_what_the_server_says_of_it() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let dir = tempfile::tempdir().unwrap();
    let line = failed_with(&agent(dir.path(), &["check"], &[]).output().unwrap(), 9);
    assert!(line.contains("no stored credentials"), "{line}");

    let mut vars = key_secret(&key, &secret);
    vars.push(("TB_GW_PROVISIONING_DEVICE_NAME", "checked"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_CLIENT_ID", "checked-client"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_USERNAME", "checked-user"));
    vars.push(("TB_GW_PROVISIONING_DEVICE_PASSWORD", "checked-password"));
    succeeded(&start(&server, "mqtt", dir.path(), &vars));
    let out = succeeded(&agent(dir.path(), &["check"], &[]).output().unwrap());
    assert!(
        out.contains(
            "MQTT_BASIC (clientId checked-client, userName checked-user, with a password)"
        ),
        "{out}"
    );
    assert!(
        !out.contains("checked-password"),
        "the password is never printed: {out}"
    );

    // provisiond serves provisioning only, so it refuses a device's own CONNECT.
    let port = server.mqtt_addr().port().to_string();
    let output = agent(
        dir.path(),
        &["check", "--connect", "--host", "127.0.0.1", "--port", &port],
        &[],
    )
    .output()
    .unwrap();
    let line = failed_with(&output, 10);
    assert!(line.contains("refused the stored credentials"), "{line}");
}
