//! Durability: devices survive graceful restarts, SIGTERM and SIGKILL; every device whose success
//! was answered is there afterwards with the same credentials.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ADMIN_TOKEN, ServerProcess, TestServer, admin_call, request};

#[test]
fn devices_and_profiles_survive_a_graceful_restart() {
    let mut server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut answered = HashMap::new();
    for i in 0..20 {
        let (_, reply) = server.provision(&request(&key, &secret, &format!("r-{i}")));
        answered.insert(format!("r-{i}"), reply["credentialsValue"].clone());
    }
    server.restart();
    for (name, value) in &answered {
        let (_, reply) = server.provision(&request(&key, &secret, name));
        assert_eq!(&reply["credentialsValue"], value, "{name}");
    }
    assert_eq!(server.device_names("fleet").len(), 20);
}

#[test]
fn every_answered_device_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let process = ServerProcess::start(&data);
    let agent = super::agent();
    let base = format!("http://{}", process.addr);
    let (status, profile) = admin_call(
        &agent,
        &format!("{base}/api/admin/profiles"),
        "POST",
        Some(ADMIN_TOKEN),
        Some(json!({ "name": "fleet" })),
    );
    assert_eq!(status, 201);
    let key = profile["provisionDeviceKey"].as_str().unwrap().to_string();
    let secret = profile["provisionDeviceSecret"]
        .as_str()
        .unwrap()
        .to_string();

    // Eight clients provision as fast as they can, recording every success they are told.
    let answered = Arc::new(Mutex::new(HashMap::<String, Value>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (answered, stop, key, secret, url) = (
                answered.clone(),
                stop.clone(),
                key.clone(),
                secret.clone(),
                format!("{base}/api/v1/provision"),
            );
            std::thread::spawn(move || {
                let agent = super::agent();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("k-{c}-{i}");
                    i += 1;
                    let Ok(mut response) =
                        agent.post(&url).send_json(request(&key, &secret, &name))
                    else {
                        break; // the server is gone
                    };
                    let Ok(reply) = response.body_mut().read_json::<Value>() else {
                        break;
                    };
                    if reply["status"] == "SUCCESS" {
                        answered
                            .lock()
                            .unwrap()
                            .insert(name, reply["credentialsValue"].clone());
                    }
                }
            })
        })
        .collect();
    // Let load build up, then kill without warning while requests are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while answered.lock().unwrap().len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "load never reached 200 devices"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    process.kill();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 200);

    let process = ServerProcess::start(&data);
    let base = format!("http://{}", process.addr);
    for (name, value) in &answered {
        let (status, device) = admin_call(
            &agent,
            &format!("{base}/api/admin/devices/{name}"),
            "GET",
            Some(ADMIN_TOKEN),
            None,
        );
        assert_eq!(status, 200, "{name} was answered SUCCESS but is gone");
        assert_eq!(&device["credentialsValue"], value, "{name}");
        assert_eq!(device["provisionState"], "provisioned");
    }
    // Replays return the same credentials after the crash.
    let url = format!("{base}/api/v1/provision");
    for (name, value) in answered.iter().take(50) {
        let mut response = agent
            .post(&url)
            .send_json(request(&key, &secret, name))
            .unwrap();
        let reply: Value = response.body_mut().read_json().unwrap();
        assert_eq!(&reply["credentialsValue"], value, "{name}");
    }
    process.kill();
}

#[test]
fn sigterm_stops_gracefully_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = ServerProcess::start(&data);
    let agent = super::agent();
    let base = format!("http://{}", process.addr);
    let (_, profile) = admin_call(
        &agent,
        &format!("{base}/api/admin/profiles"),
        "POST",
        Some(ADMIN_TOKEN),
        Some(
            json!({ "name": "fleet", "provisionDeviceKey": "k-term", "provisionDeviceSecret": "s-term" }),
        ),
    );
    assert_eq!(profile["name"], "fleet");
    let mut response = agent
        .post(format!("{base}/api/v1/provision"))
        .send_json(request("k-term", "s-term", "term-1"))
        .unwrap();
    let reply: Value = response.body_mut().read_json().unwrap();
    assert_eq!(reply["status"], "SUCCESS");
    let pid = process.child.id() as i32;
    let rc = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let status = process.child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let process = ServerProcess::start(&data);
    let (status, device) = admin_call(
        &agent,
        &format!("http://{}/api/admin/devices/term-1", process.addr),
        "GET",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(device["credentialsValue"], reply["credentialsValue"]);
    process.kill();
}

#[test]
fn sigterm_under_load_answers_what_is_in_flight_exits_and_keeps_every_answered_device() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = ServerProcess::start(&data);
    let agent = super::agent();
    let base = format!("http://{}", process.addr);
    let (status, _) = admin_call(
        &agent,
        &format!("{base}/api/admin/profiles"),
        "POST",
        Some(ADMIN_TOKEN),
        Some(
            json!({ "name": "load", "provisionDeviceKey": "k-load", "provisionDeviceSecret": "s-load" }),
        ),
    );
    assert_eq!(status, 201);
    let answered = Mutex::new(Vec::<(String, Value)>::new());
    let url = format!("{base}/api/v1/provision");
    let pid = process.child.id() as i32;
    std::thread::scope(|s| {
        for t in 0..16 {
            let (url, answered) = (&url, &answered);
            s.spawn(move || {
                // Each client keeps its own connection and goes on until the server is gone.
                let agent = super::agent();
                for i in 0.. {
                    let name = format!("load-{t}-{i}");
                    let Ok(mut response) = agent
                        .post(url)
                        .send_json(request("k-load", "s-load", &name))
                    else {
                        return;
                    };
                    let status = response.status().as_u16();
                    let Ok(reply) = response.body_mut().read_json::<Value>() else {
                        return;
                    };
                    match (status, reply["status"].as_str()) {
                        (200, Some("SUCCESS")) => answered
                            .lock()
                            .unwrap()
                            .push((name, reply["credentialsValue"].clone())),
                        // Refused while stopping: nothing was written, the device retries.
                        (503, Some("FAILURE")) => {}
                        other => panic!("unexpected answer while stopping: {other:?} {reply}"),
                    }
                }
            });
        }
        // SIGTERM once the load is well under way.
        while answered.lock().unwrap().len() < 300 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let rc = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(rc.success());
        // A hang guard, not a measurement: shutdown_timeout_ms is 10 s by default.
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = process.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "graceful stop exits 0, got {status}");
    });
    let answered = answered.into_inner().unwrap();
    let process = ServerProcess::start(&data);
    for (name, credentials) in &answered {
        let (status, device) = admin_call(
            &agent,
            &format!("http://{}/api/admin/devices/{name}", process.addr),
            "GET",
            Some(ADMIN_TOKEN),
            None,
        );
        assert_eq!(status, 200, "{name} was answered SUCCESS before the stop");
        assert_eq!(&device["credentialsValue"], credentials, "{name}");
    }
    eprintln!(
        "sigterm under load: {} answered devices all present after restart",
        answered.len()
    );
    process.kill();
}
