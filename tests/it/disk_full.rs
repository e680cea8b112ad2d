//! A full disk: the data directory lives on a small tmpfs that a filler file fills up.
//! Provisioning then answers FAILURE with the reason in the log and writes nothing; once the
//! filler is gone, service resumes in the same process, with no restart. Mounting needs root (CAP_SYS_ADMIN): where
//! the test cannot mount, it says so and passes without running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{TestServer, request};

/// A tmpfs mounted for the test's lifetime.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }),
            _ => None,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `path` until the file system refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // The last partial chunk may not fit; fill byte by byte to the very end.
    while file.write_all(&[0x5a]).is_ok() {
        written += 1;
    }
    written
}

#[test]
fn a_full_disk_answers_failure_writes_nothing_and_service_resumes_when_space_returns() {
    let Some(disk) = SmallDisk::mount(64) else {
        eprintln!("disk_full: skipped, cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let data = disk.path.join("data");
    let mut server = TestServer::start_with(|config| config.data_dir = data.clone());
    let (key, secret) = server.profile("disk", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let (_, body) = server.provision(&request(&key, &secret, "before-full"));
    assert_eq!(body["status"], "SUCCESS", "{body}");

    let filler = disk.path.join("filler");
    fill(&filler);
    // Writes go on into space RocksDB already holds until it needs more: provision until the
    // first FAILURE (bounded).
    let mut failed = None;
    let mut succeeded = Vec::new();
    for i in 0..20_000 {
        let name = format!("while-full-{i}");
        let (_, body) = server.provision(&request(&key, &secret, &name));
        match body["status"].as_str() {
            Some("SUCCESS") => succeeded.push(name),
            Some("FAILURE") => {
                failed = Some(name);
                break;
            }
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    let failed = failed.expect("a full disk makes provisioning fail");
    // Nothing half-written: the refused device is absent, every answered one is present.
    assert!(
        server.device(&failed).is_none(),
        "{failed} was refused but exists"
    );
    for name in succeeded.iter().rev().take(10) {
        assert!(server.device(name).is_some(), "{name} was answered SUCCESS");
    }

    // Not ready while the disk is full, so a load balancer sends devices elsewhere; still
    // alive, because a restart would not help (and could not open the store without room).
    let readyz = super::agent().get(server.url("/readyz")).call().unwrap();
    assert_eq!(readyz.status().as_u16(), 503);
    let healthz = super::agent().get(server.url("/healthz")).call().unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
    let (_, body) = server.provision(&request(&key, &secret, &failed));
    assert_eq!(body["status"], "FAILURE", "still full: {body}");

    // Space returns: the filler goes and the volume grows (RocksDB resumes only once one write
    // buffer, 64 MiB, is free, which a 64 MiB disk never has). RocksDB's SstFileManager notices
    // within its 5 s poll and resumes the database; the readiness probe's write then finds it
    // writable again. Same process, no restart.
    std::fs::remove_file(&filler).unwrap();
    let status = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&disk.path)
        .status()
        .unwrap();
    assert!(status.success(), "growing the tmpfs failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let readyz = super::agent().get(server.url("/readyz")).call().unwrap();
        if readyz.status().as_u16() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not resume within 120 s of space returning"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let (_, body) = server.provision(&request(&key, &secret, &failed));
    assert_eq!(body["status"], "SUCCESS", "{body}");
    let told_after = body["credentialsValue"].clone();
    assert!(server.device(&failed).is_some());
    for name in &succeeded {
        assert!(server.device(name).is_some(), "{name} lost after resuming");
    }

    // And what was written after the resume is durable: a restart finds it all.
    server.restart();
    let (_, body) = server.provision(&request(&key, &secret, &failed));
    assert_eq!(body["status"], "SUCCESS", "{body}");
    assert_eq!(
        body["credentialsValue"], told_after,
        "same credentials after the restart"
    );
    for name in &succeeded {
        assert!(
            server.device(name).is_some(),
            "{name} lost across the restart"
        );
    }
    eprintln!(
        "disk_full: {} devices provisioned on the full disk before the first FAILURE",
        succeeded.len()
    );
    server.stop();
    drop(disk);
}

fn remount(path: &Path, mode: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(path)
        .status()
        .expect("mount runs");
    assert!(status.success(), "remount {mode} failed");
}

#[test]
fn a_read_only_data_directory_is_refused_at_start_with_its_reason_and_nothing_is_lost() {
    let Some(disk) = SmallDisk::mount(64) else {
        eprintln!("read_only: skipped, cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let data = disk.path.join("data");
    let server = super::ServerProcess::start(&data);
    let agent = super::agent();
    create_profile(&agent, &server, "ro");
    let told = provision_told(&agent, &server, "ro", 0..20);
    server.kill();

    // The file system turns read-only (as after an fs error, or a mistaken mount): provisiond
    // refuses to start, and says which directory and why.
    remount(&disk.path, "ro");
    let mut child = super::serve_command(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("provisiond started on a read-only data directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!exit.success(), "a read-only data directory must not serve");
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains("Read-only file system"),
        "the error names the directory and the reason: {stderr}"
    );

    // Writable again: everything that was answered is there, unchanged.
    remount(&disk.path, "rw");
    let server = super::ServerProcess::start(&data);
    assert_told_present(&agent, &server, &told);
    server.kill();
}

/// Creates the profile `name` (key `NAME-key`, secret `NAME-secret`) through the admin API.
fn create_profile(agent: &ureq::Agent, server: &super::ServerProcess, name: &str) {
    let (status, profile) = super::admin_call(
        agent,
        &format!("http://{}/api/admin/profiles", server.addr),
        "POST",
        Some(super::ADMIN_TOKEN),
        Some(
            serde_json::json!({ "name": name, "provisionDeviceKey": format!("{name}-key"),
            "provisionDeviceSecret": format!("{name}-secret") }),
        ),
    );
    assert_eq!(status, 201, "{profile}");
}

/// One provisioning request over HTTP in profile `profile`; the answer's JSON.
fn provision_one(
    agent: &ureq::Agent,
    server: &super::ServerProcess,
    profile: &str,
    name: &str,
) -> serde_json::Value {
    let mut response = agent
        .post(format!("http://{}/api/v1/provision", server.addr))
        .send_json(request(
            &format!("{profile}-key"),
            &format!("{profile}-secret"),
            name,
        ))
        .unwrap();
    response.body_mut().read_json().unwrap()
}

/// Provisions `PROFILE-i` for each i, asserting SUCCESS; what each device was told.
fn provision_told(
    agent: &ureq::Agent,
    server: &super::ServerProcess,
    profile: &str,
    range: std::ops::Range<u32>,
) -> Vec<(String, serde_json::Value)> {
    range
        .map(|i| {
            let name = format!("{profile}-{i}");
            let body = provision_one(agent, server, profile, &name);
            assert_eq!(body["status"], "SUCCESS", "{body}");
            (name, body["credentialsValue"].clone())
        })
        .collect()
}

/// Every told device is stored with the credentials it was told.
fn assert_told_present(
    agent: &ureq::Agent,
    server: &super::ServerProcess,
    told: &[(String, serde_json::Value)],
) {
    for (name, credentials) in told {
        let (status, device) = super::admin_call(
            agent,
            &format!("http://{}/api/admin/devices/{name}", server.addr),
            "GET",
            Some(super::ADMIN_TOKEN),
            None,
        );
        assert_eq!(status, 200, "{name}: {device}");
        assert_eq!(&device["credentialsValue"], credentials, "{name}");
    }
}

/// A small ext4 file system in a loop-mounted image, mounted with `errors=remount-ro`, so that
/// ext4's `trigger_fs_error` knob turns it read-only at once, with files open for writing, as a
/// real file-system error does.
struct Ext4Disk {
    image: PathBuf,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ext4Disk {
    fn mount() -> Option<Ext4Disk> {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let quiet = |command: &mut Command| {
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = quiet(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let disk = Ext4Disk {
            image,
            path,
            _dir: dir,
        };
        (made && disk.mount_image(quiet)).then_some(disk)
    }

    fn mount_image(&self, run: impl Fn(&mut Command) -> bool) -> bool {
        run(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&self.image)
            .arg(&self.path))
    }

    /// The loop device's name under /sys/fs/ext4.
    fn device_name(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path)
            .output()
            .unwrap();
        let source = String::from_utf8(out.stdout).unwrap();
        Path::new(source.trim())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Simulates a file-system error: ext4 remounts itself read-only.
    fn fail(&self) {
        let knob = format!("/sys/fs/ext4/{}/trigger_fs_error", self.device_name());
        std::fs::write(&knob, "provisiond test").expect("ext4 trigger_fs_error");
    }

    /// What an operator does after the error: unmount, fsck, mount again read-write.
    fn repair(&self) {
        let ok = |command: &mut Command| command.status().is_ok_and(|s| s.success());
        assert!(ok(Command::new("umount").arg(&self.path)), "umount");
        // e2fsck exits 1 when it fixed something, which is expected after the error.
        let fsck = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&self.image)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(fsck.code().is_some_and(|c| c <= 1), "e2fsck: {fsck}");
        assert!(self.mount_image(ok), "mount again");
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_directory_turning_read_only_mid_run_fails_writes_cleanly_and_nothing_answered_is_lost() {
    let Some(disk) = Ext4Disk::mount() else {
        eprintln!("read_only_mid_run: skipped, cannot loop-mount an ext4 image here (needs root)");
        return;
    };
    let data = disk.path.join("data");
    let server = super::ServerProcess::start(&data);
    let agent = super::agent();
    create_profile(&agent, &server, "midrun");
    let told = provision_told(&agent, &server, "midrun", 0..20);

    // The file system fails under the running server, with RocksDB's files open for writing.
    disk.fail();
    let refused = "midrun-refused";
    let body = provision_one(&agent, &server, "midrun", refused);
    assert_eq!(
        body["status"], "FAILURE",
        "a read-only disk cannot store: {body}"
    );
    // Reads still work, and show that nothing of the refused device was written.
    let (status, _) = super::admin_call(
        &agent,
        &format!("http://{}/api/admin/devices/{refused}", server.addr),
        "GET",
        Some(super::ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 404, "the refused device must not exist");
    assert_told_present(&agent, &server, &told);
    // A replay of an answered device needs no write and still gets its credentials.
    let replay = provision_one(&agent, &server, "midrun", &told[0].0);
    assert_eq!(replay["status"], "SUCCESS", "{replay}");
    assert_eq!(replay["credentialsValue"], told[0].1);
    let readyz = agent
        .get(format!("http://{}/readyz", server.addr))
        .call()
        .unwrap();
    assert_eq!(readyz.status().as_u16(), 503, "not ready while writes fail");

    // The operator repairs the file system; after a restart every answered device is there,
    // and the refused one provisions now.
    server.kill();
    disk.repair();
    let server = super::ServerProcess::start(&data);
    assert_told_present(&agent, &server, &told);
    let body = provision_one(&agent, &server, "midrun", refused);
    assert_eq!(body["status"], "SUCCESS", "{body}");
    server.kill();
}
