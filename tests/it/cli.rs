//! The binary as a user runs it: config, profile commands (local and against a server), and
//! clear one-line errors with a non-zero exit.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use super::{ADMIN_TOKEN, ServerProcess, binary};

fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("PROVISIOND_ADMIN_TOKEN")
        .output()
        .expect("binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn config_default_prints_the_shipped_file() {
    let output = run(&["config", "--default"]);
    assert!(output.status.success());
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/provisiond.toml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), shipped);
}

#[test]
fn bad_flags_and_bad_config_fail_with_one_clear_line() {
    let output = run(&["serve", "--http-port", "seventy"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--http-port"),
        "{}",
        stderr(&output)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[engine]\nmax_batch = 0\n").unwrap();
    let output = run(&["serve", "--config", file.to_str().unwrap()]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("engine.max_batch"), "{text}");
}

#[test]
fn unwritable_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let data = file.join("data");
    let output = run(&[
        "serve",
        "--http-port",
        "0",
        "--bind",
        "127.0.0.1",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("cannot open data directory"), "{text}");
    assert!(text.contains(data.to_str().unwrap()), "{text}");
}

#[test]
fn port_in_use_and_held_data_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data);
    // Same data directory: held by the running server.
    let output = run(&[
        "serve",
        "--http-port",
        "0",
        "--bind",
        "127.0.0.1",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("in use by another process"),
        "{}",
        stderr(&output)
    );
    // Another data directory, but the server's port.
    let other = dir.path().join("other");
    let port = server.addr.port().to_string();
    let output = run(&[
        "serve",
        "--http-port",
        &port,
        "--bind",
        "127.0.0.1",
        "--data-dir",
        other.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("cannot listen on 127.0.0.1:"), "{text}");
    assert!(text.contains("in use"), "{text}");
    // Profile commands without --server cannot open a held data directory either, and say why.
    let output = run(&["profile", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--server"), "{}", stderr(&output));
    server.kill();
}

#[test]
fn profile_commands_work_locally_and_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let output = run(&[
        "profile",
        "create",
        "plant-a",
        "--strategy",
        "CHECK_PRE_PROVISIONED_DEVICES",
        "--key",
        "key-a",
        "--secret",
        "secret-a",
        "--data-dir",
        d,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["provisionDeviceKey"], "key-a");
    assert_eq!(created["strategy"], "CHECK_PRE_PROVISIONED_DEVICES");
    let output = run(&["profile", "create", "plant-a", "--data-dir", d]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    let output = run(&[
        "profile",
        "create",
        "x",
        "--strategy",
        "MAYBE",
        "--data-dir",
        d,
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("strategy must be"),
        "{}",
        stderr(&output)
    );

    let server = ServerProcess::start(&data);
    let url = format!("http://{}", server.addr);
    let remote = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &url, "--admin-token", ADMIN_TOKEN]);
        run(&all)
    };
    let output = remote(&["profile", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listing = String::from_utf8(output.stdout).unwrap();
    assert!(
        listing.contains("plant-a") && listing.contains("key-a"),
        "{listing}"
    );
    let output = remote(&[
        "profile",
        "create",
        "plant-b",
        "--reprovision-policy",
        "REJECT",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = remote(&["profile", "update", "plant-b", "--secret", "rotated-secret"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = remote(&["profile", "show", "plant-b"]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["provisionDeviceSecret"], "rotated-secret");
    assert_eq!(shown["reprovisionPolicy"], "REJECT");
    let output = remote(&["profile", "delete", "plant-b"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = remote(&["profile", "show", "plant-b"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no profile named"),
        "{}",
        stderr(&output)
    );
    let output = run(&[
        "profile",
        "list",
        "--server",
        &url,
        "--admin-token",
        "not-the-token",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("admin token"),
        "{}",
        stderr(&output)
    );
    server.kill();
}

#[test]
fn generated_admin_token_is_private_printed_once_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        super::serve_command(&data)
            .args(["--log-format", "json"])
            .env_remove("PROVISIOND_ADMIN_TOKEN")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("generated the admin token"), "{first}");
    let token = first.rsplit(' ').next().unwrap().to_string();
    let serving = lines.next().unwrap().unwrap();
    assert!(
        serving.starts_with("provisiond: serving HTTP on "),
        "{serving}"
    );
    let path = data.join("admin.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(&token),
        "token in the log"
    );

    let mut child = start();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("provisiond: serving HTTP on "),
        "printed only once: {first}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The binary under QEMU's user-mode emulation of an older CPU model.
#[cfg(target_arch = "x86_64")]
fn run_on_cpu(model: &str) -> Output {
    Command::new("qemu-x86_64")
        .args(["-cpu", model])
        .arg(binary())
        .arg("--version")
        .output()
        .expect("qemu-x86_64 runs (Debian package qemu-user)")
}

#[test]
#[cfg(target_arch = "x86_64")]
fn a_cpu_without_the_build_features_gets_one_line_naming_them() {
    // qemu64 has neither SSE4 nor PCLMULQDQ: without the check, RocksDB's static initializers
    // (compiled with SSE4.1) would stop the program with SIGILL before `main`.
    let output = run_on_cpu("qemu64");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(
            "provisiond: this CPU lacks pclmulqdq, ssse3, sse4.1, sse4.2, popcnt, which this build uses"
        ),
        "{text}"
    );
    assert!(
        text.contains("RUSTFLAGS=\"-C target-cpu=native\""),
        "{text}"
    );

    // Nehalem has SSE4.2 but no PCLMULQDQ; Westmere, one generation later, has both.
    let output = run_on_cpu("Nehalem");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).starts_with("provisiond: this CPU lacks pclmulqdq, which"),
        "{}",
        stderr(&output)
    );
    let output = run_on_cpu("Westmere");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("provisiond "));
}
