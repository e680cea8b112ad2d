//! Operator actions (SPEC §6) as functions from JSON in to (status, JSON) out, so that the HTTP
//! admin API and the CLI's local mode run exactly the same code. Authentication is the caller's.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::credentials::{credentials_id, credentials_type};
use crate::engine::profile::{NewProfile, ProfileError, ProfileUpdate};
use crate::engine::{Engine, now_ms};
use crate::store::record::{Credentials, DeviceRecord, ProfileRecord, ReprovisionPolicy, Strategy};

/// Default page size of device listings.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page size of device listings.
pub const MAX_PAGE: usize = 1000;

/// An admin answer: HTTP status and JSON body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

/// Parses a strategy name (SPEC spelling, case-insensitive, dashes allowed).
pub fn parse_strategy(text: &str) -> Option<Strategy> {
    match text.to_ascii_uppercase().replace('-', "_").as_str() {
        "ALLOW_CREATE_NEW_DEVICES" | "ALLOW_CREATE" => Some(Strategy::AllowCreateNewDevices),
        "CHECK_PRE_PROVISIONED_DEVICES" | "CHECK_PRE_PROVISIONED" | "CHECK_PRE" => {
            Some(Strategy::CheckPreProvisionedDevices)
        }
        "DISABLED" => Some(Strategy::Disabled),
        _ => None,
    }
}

/// Parses a re-provision policy name.
pub fn parse_policy(text: &str) -> Option<ReprovisionPolicy> {
    match text.to_ascii_uppercase().replace('-', "_").as_str() {
        "RETURN_EXISTING" => Some(ReprovisionPolicy::ReturnExisting),
        "REJECT" => Some(ReprovisionPolicy::Reject),
        _ => None,
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::AllowCreateNewDevices => "ALLOW_CREATE_NEW_DEVICES",
        Strategy::CheckPreProvisionedDevices => "CHECK_PRE_PROVISIONED_DEVICES",
        Strategy::Disabled => "DISABLED",
    }
}

fn policy_name(p: ReprovisionPolicy) -> &'static str {
    match p {
        ReprovisionPolicy::ReturnExisting => "RETURN_EXISTING",
        ReprovisionPolicy::Reject => "REJECT",
    }
}

/// The admin JSON of a profile, key and secret included.
pub fn profile_json(p: &ProfileRecord) -> Value {
    json!({
        "name": p.name,
        "strategy": strategy_name(p.strategy),
        "provisionDeviceKey": p.provision_key,
        "provisionDeviceSecret": p.provision_secret,
        "reprovisionPolicy": policy_name(p.reprovision_policy),
        "deviceType": p.device_type,
        "createdAt": p.created_at_ms,
        "updatedAt": p.updated_at_ms,
    })
}

/// The credentials value as the provisioning response shows it.
pub fn credentials_value_json(c: &Credentials) -> Value {
    match c {
        Credentials::AccessToken { token } => json!(token),
        Credentials::X509 { value } => json!(value),
        Credentials::MqttBasic {
            client_id,
            user_name,
            password,
        } => json!({ "clientId": client_id, "userName": user_name, "password": password }),
    }
}

fn attributes_json(pairs: &[(String, String)]) -> Value {
    let map = pairs
        .iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
            (k.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>();
    Value::Object(map)
}

/// The admin JSON of a device (SPEC §6).
pub fn device_json(d: &DeviceRecord) -> Value {
    let mut server_attributes = attributes_json(&d.server_attributes);
    if d.provisioned {
        server_attributes["provisionState"] = json!("provisioned");
    }
    json!({
        "name": d.name,
        "profile": d.profile,
        "type": d.device_type,
        "label": d.label,
        "gateway": d.gateway,
        "provisionState": d.provisioned.then_some("provisioned"),
        "credentialsType": d.credentials.as_ref().map(|c| credentials_type(c).as_str()),
        "credentialsId": d.credentials.as_ref().map(credentials_id),
        "credentialsValue": d.credentials.as_ref().map(credentials_value_json),
        "serverAttributes": server_attributes,
        "sharedAttributes": attributes_json(&d.shared_attributes),
        "createdAt": d.created_at_ms,
        "provisionedAt": d.provisioned_at_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    name: String,
    strategy: Option<String>,
    provision_device_key: Option<String>,
    provision_device_secret: Option<String>,
    reprovision_policy: Option<String>,
    device_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateBody {
    strategy: Option<String>,
    provision_device_secret: Option<String>,
    reprovision_policy: Option<String>,
    #[serde(default, deserialize_with = "present")]
    device_type: Option<Option<String>>,
}

/// Distinguishes `"deviceType": null` (clear) from an absent key (keep).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The optional strategy and re-provision policy of a create or update body.
fn choices(
    strategy: Option<&str>,
    policy: Option<&str>,
) -> Result<(Option<Strategy>, Option<ReprovisionPolicy>), Reply> {
    let strategy = strategy
        .map(|t| {
            parse_strategy(t).ok_or_else(|| {
                Reply::error(
                    400,
                    "strategy must be ALLOW_CREATE_NEW_DEVICES, CHECK_PRE_PROVISIONED_DEVICES or DISABLED",
                )
            })
        })
        .transpose()?;
    let policy = policy
        .map(|t| {
            parse_policy(t).ok_or_else(|| {
                Reply::error(400, "reprovisionPolicy must be RETURN_EXISTING or REJECT")
            })
        })
        .transpose()?;
    Ok((strategy, policy))
}

fn profile_error(e: ProfileError) -> Reply {
    match e {
        ProfileError::NameExists(_) | ProfileError::KeyExists | ProfileError::HasDevices(_) => {
            Reply::error(409, e.to_string())
        }
        ProfileError::NotFound(_) => Reply::error(404, e.to_string()),
        ProfileError::Invalid(_) => Reply::error(400, e.to_string()),
        ProfileError::Store(store) => {
            tracing::error!(error = %store, "admin request failed in the store");
            Reply::error(500, "storage error; see the server log")
        }
    }
}

fn body_error(e: serde_json::Error) -> Reply {
    Reply::error(400, format!("invalid JSON body: {e}"))
}

/// `POST /api/admin/profiles`
pub fn create_profile(engine: &Engine, body: &[u8]) -> Reply {
    let body: CreateBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let (strategy, reprovision_policy) =
        match choices(body.strategy.as_deref(), body.reprovision_policy.as_deref()) {
            Ok(parsed) => parsed,
            Err(r) => return r,
        };
    let new = NewProfile {
        name: body.name,
        strategy,
        provision_key: body.provision_device_key,
        provision_secret: body.provision_device_secret,
        reprovision_policy,
        device_type: body.device_type,
    };
    match engine.profiles().create(new, now_ms()) {
        Ok(p) => Reply {
            status: 201,
            body: profile_json(&p),
        },
        Err(e) => profile_error(e),
    }
}

/// `GET /api/admin/profiles`
pub fn list_profiles(engine: &Engine) -> Reply {
    let all: Vec<Value> = engine
        .profiles()
        .list()
        .iter()
        .map(|p| profile_json(p))
        .collect();
    Reply::ok(Value::Array(all))
}

/// `GET /api/admin/profiles/{name}`
pub fn get_profile(engine: &Engine, name: &str) -> Reply {
    match engine.profiles().by_name(name) {
        Some(p) => Reply::ok(profile_json(&p)),
        None => profile_error(ProfileError::NotFound(name.to_string())),
    }
}

/// `PUT /api/admin/profiles/{name}`
pub fn update_profile(engine: &Engine, name: &str, body: &[u8]) -> Reply {
    let body: UpdateBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let (strategy, reprovision_policy) =
        match choices(body.strategy.as_deref(), body.reprovision_policy.as_deref()) {
            Ok(parsed) => parsed,
            Err(r) => return r,
        };
    let update = ProfileUpdate {
        strategy,
        provision_secret: body.provision_device_secret,
        reprovision_policy,
        device_type: body.device_type,
    };
    match engine.profiles().update(name, update, now_ms()) {
        Ok(p) => Reply::ok(profile_json(&p)),
        Err(e) => profile_error(e),
    }
}

/// `DELETE /api/admin/profiles/{name}[?force=true]`
pub async fn delete_profile(engine: &Engine, name: &str, force: bool) -> Reply {
    match engine.delete_profile(name, force).await {
        Ok((p, devices)) => Reply::ok(json!({ "deleted": p.name, "devicesDeleted": devices })),
        Err(e) => profile_error(e),
    }
}

/// `GET /api/admin/devices/{name}`
pub async fn get_device(engine: &Engine, name: &str) -> Reply {
    match engine.device(name).await {
        Ok(Some(d)) => Reply::ok(device_json(&d)),
        Ok(None) => Reply::error(404, format!("no device named {name:?}")),
        Err(e) => engine_error(e),
    }
}

/// `GET /api/admin/devices?profile=P&limit=N&cursor=C`
pub fn list_devices(
    engine: &Engine,
    profile: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Reply {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else {
        return Reply::error(400, "the profile query parameter is required");
    };
    let limit = match limit.map(str::parse::<usize>) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Reply::error(400, format!("limit must be a number from 1 to {MAX_PAGE}"));
        }
    };
    let after = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(name) => Some(name),
            None => return Reply::error(400, "cursor is not one this server returned"),
        },
    };
    match engine.list_devices(profile, after.as_deref(), limit) {
        Ok(devices) => {
            let next = (devices.len() == limit)
                .then(|| devices.last().map(|d| URL_SAFE_NO_PAD.encode(&d.name)))
                .flatten();
            Reply::ok(json!({
                "devices": devices.iter().map(device_json).collect::<Vec<_>>(),
                "nextCursor": next,
            }))
        }
        Err(e) => {
            tracing::error!(error = %e, "listing devices failed");
            Reply::error(500, "storage error; see the server log")
        }
    }
}

/// `DELETE /api/admin/devices/{name}`
pub async fn delete_device(engine: &Engine, name: &str) -> Reply {
    match engine.delete_device(name).await {
        Ok(true) => Reply::ok(json!({ "deleted": name })),
        Ok(false) => Reply::error(404, format!("no device named {name:?}")),
        Err(e) => engine_error(e),
    }
}

/// `POST /api/admin/devices/{name}/reset[?credentials=drop]`
pub async fn reset_device(engine: &Engine, name: &str, drop_credentials: bool) -> Reply {
    match engine.reset_device(name, drop_credentials).await {
        Ok(Some(d)) => Reply::ok(device_json(&d)),
        Ok(None) => Reply::error(404, format!("no device named {name:?}")),
        Err(e) => engine_error(e),
    }
}

fn engine_error(e: crate::engine::provision::ProvisionError) -> Reply {
    tracing::error!(error = %e, "admin request failed in the engine");
    Reply::error(503, format!("{e}; try again"))
}
