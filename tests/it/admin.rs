//! The admin API (SPEC §6): authentication, profiles CRUD, device get/list/delete/reset.

use serde_json::json;

use super::{TestServer, admin_call, request};

#[test]
fn every_admin_endpoint_refuses_a_missing_or_wrong_token() {
    let server = TestServer::start();
    let agent = super::agent();
    let endpoints = [
        ("GET", "/api/admin/profiles"),
        ("POST", "/api/admin/profiles"),
        ("GET", "/api/admin/profiles/p"),
        ("PUT", "/api/admin/profiles/p"),
        ("DELETE", "/api/admin/profiles/p"),
        ("GET", "/api/admin/devices?profile=p"),
        ("GET", "/api/admin/devices/d"),
        ("DELETE", "/api/admin/devices/d"),
        ("POST", "/api/admin/devices/d/reset"),
        ("POST", "/api/admin/import?profile=p"),
        ("GET", "/api/admin/export"),
    ];
    for (method, path) in endpoints {
        for token in [None, Some("wrong-token"), Some("")] {
            let body = matches!(method, "POST" | "PUT").then(|| json!({ "name": "p" }));
            let (status, reply) = admin_call(&agent, &server.url(path), method, token, body);
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert!(reply["error"].as_str().unwrap().contains("admin token"));
        }
    }
    let (status, reply) = server.admin("GET", "/api/admin/profiles", None);
    assert_eq!(status, 200);
    assert_eq!(reply, json!([]), "the refused POSTs created nothing");
}

#[test]
fn profiles_crud() {
    let server = TestServer::start();
    let (status, created) = server.admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({ "name": "fleet", "strategy": "CHECK_PRE_PROVISIONED_DEVICES", "deviceType": "meter" })),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["strategy"], "CHECK_PRE_PROVISIONED_DEVICES");
    assert_eq!(created["reprovisionPolicy"], "RETURN_EXISTING");
    assert_eq!(created["deviceType"], "meter");
    let key = created["provisionDeviceKey"].as_str().unwrap();
    assert_eq!(key.len(), 20);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    // Conflicts: same name, same key.
    let (status, _) = server.admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({ "name": "fleet" })),
    );
    assert_eq!(status, 409);
    let (status, _) = server.admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({ "name": "other", "provisionDeviceKey": key })),
    );
    assert_eq!(status, 409);
    // Bad input names the problem.
    let (status, reply) = server.admin(
        "POST",
        "/api/admin/profiles",
        Some(json!({ "name": "x", "strategy": "SOMETIMES" })),
    );
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("strategy"));
    let (status, reply) = server.admin("POST", "/api/admin/profiles", Some(json!({ "nmae": "x" })));
    assert_eq!(status, 400, "{reply}");
    // Get, list, update.
    let (status, got) = server.admin("GET", "/api/admin/profiles/fleet", None);
    assert_eq!((status, &got), (200, &created));
    let (status, list) = server.admin("GET", "/api/admin/profiles", None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, updated) = server.admin(
        "PUT",
        "/api/admin/profiles/fleet",
        Some(json!({ "provisionDeviceSecret": "new-secret", "reprovisionPolicy": "REJECT" })),
    );
    assert_eq!(status, 200);
    assert_eq!(updated["provisionDeviceSecret"], "new-secret");
    assert_eq!(updated["reprovisionPolicy"], "REJECT");
    assert_eq!(updated["provisionDeviceKey"], created["provisionDeviceKey"]);
    let (status, _) = server.admin("GET", "/api/admin/profiles/nobody", None);
    assert_eq!(status, 404);
    let (status, _) = server.admin("DELETE", "/api/admin/profiles/fleet", None);
    assert_eq!(status, 200);
    let (status, _) = server.admin("GET", "/api/admin/profiles/fleet", None);
    assert_eq!(status, 404);
}

#[test]
fn a_changed_or_deleted_profile_is_never_served() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let (_, reply) = server.provision(&request(&key, &secret, "a"));
    assert_eq!(reply["status"], "SUCCESS");
    server.admin(
        "PUT",
        "/api/admin/profiles/fleet",
        Some(json!({ "provisionDeviceSecret": "rotated" })),
    );
    let (_, reply) = server.provision(&request(&key, &secret, "b"));
    assert_eq!(
        reply["status"], "NOT_FOUND",
        "the old secret stops working at once"
    );
    let (_, reply) = server.provision(&request(&key, "rotated", "b"));
    assert_eq!(reply["status"], "SUCCESS");
    server.admin(
        "PUT",
        "/api/admin/profiles/fleet",
        Some(json!({ "strategy": "DISABLED" })),
    );
    let (_, reply) = server.provision(&request(&key, "rotated", "c"));
    assert_eq!(reply["status"], "NOT_FOUND");
    // Deleting a profile with devices needs force, which deletes them too.
    let (status, reply) = server.admin("DELETE", "/api/admin/profiles/fleet", None);
    assert_eq!(status, 409, "{reply}");
    let (status, reply) = server.admin("DELETE", "/api/admin/profiles/fleet?force=true", None);
    assert_eq!(status, 200);
    assert_eq!(reply["devicesDeleted"], 2);
    assert!(server.device("a").is_none());
    let (_, reply) = server.provision(&request(&key, "rotated", "d"));
    assert_eq!(reply["status"], "NOT_FOUND");
    // The deleted devices' tokens are free again.
    let (key2, secret2) = server.profile("fleet2", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    let mut reuse = request(&key2, &secret2, "a");
    reuse["token"] = json!("reused-token");
    let (_, reply) = server.provision(&reuse);
    assert_eq!(reply["status"], "SUCCESS");
}

#[test]
fn devices_get_list_page_delete_reset() {
    let server = TestServer::start();
    let (key, secret) = server.profile("fleet", "ALLOW_CREATE_NEW_DEVICES", "RETURN_EXISTING");
    for i in 0..25 {
        let mut body = request(&key, &secret, &format!("dev-{i:02}"));
        body["token"] = json!(format!("token-{i:02}"));
        body["gateway"] = json!(i == 0);
        let (_, reply) = server.provision(&body);
        assert_eq!(reply["status"], "SUCCESS");
    }
    let (status, device) = server.admin("GET", "/api/admin/devices/dev-00", None);
    assert_eq!(status, 200);
    for field in [
        "name",
        "profile",
        "type",
        "label",
        "gateway",
        "provisionState",
        "credentialsType",
        "credentialsId",
        "credentialsValue",
        "serverAttributes",
        "sharedAttributes",
        "createdAt",
        "provisionedAt",
    ] {
        assert!(
            device.get(field).is_some(),
            "device JSON lacks {field}: {device}"
        );
    }
    assert_eq!(device["gateway"], true);
    assert_eq!(device["credentialsType"], "ACCESS_TOKEN");
    assert_eq!(device["credentialsId"], "token-00");
    // Pages of 10 in name order with a cursor.
    let (_, page1) = server.admin("GET", "/api/admin/devices?profile=fleet&limit=10", None);
    let names: Vec<&str> = page1["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"dev-00"));
    assert_eq!(names.len(), 10);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = server.admin(
        "GET",
        &format!("/api/admin/devices?profile=fleet&limit=10&cursor={cursor}"),
        None,
    );
    assert_eq!(page2["devices"][0]["name"], "dev-10");
    assert_eq!(server.device_names("fleet").len(), 25);
    let (status, _) = server.admin("GET", "/api/admin/devices?limit=10", None);
    assert_eq!(status, 400, "profile is required");
    let (status, _) = server.admin("GET", "/api/admin/devices?profile=fleet&limit=0", None);
    assert_eq!(status, 400);
    // Delete frees the token; a second delete is 404.
    let (status, _) = server.admin("DELETE", "/api/admin/devices/dev-05", None);
    assert_eq!(status, 200);
    let (status, _) = server.admin("DELETE", "/api/admin/devices/dev-05", None);
    assert_eq!(status, 404);
    let mut reuse = request(&key, &secret, "newcomer");
    reuse["token"] = json!("token-05");
    let (_, reply) = server.provision(&reuse);
    assert_eq!(reply["status"], "SUCCESS");
    // Reset keeps credentials unless told to drop them.
    let (status, reset) = server.admin("POST", "/api/admin/devices/dev-06/reset", None);
    assert_eq!(status, 200);
    assert_eq!(reset["provisionState"], serde_json::Value::Null);
    assert_eq!(reset["credentialsId"], "token-06");
    let (status, _) = server.admin("POST", "/api/admin/devices/nobody/reset", None);
    assert_eq!(status, 404);
    let (status, _) = server.admin("GET", "/api/admin/devices/nobody", None);
    assert_eq!(status, 404);
}
