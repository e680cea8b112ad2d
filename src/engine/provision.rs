//! The provisioning decision (SPEC §4) as a pure function:
//! (request, profile, stored device, claim) → (outcome, write). No IO, no clock, no randomness
//! except through the `fresh_token` callback the shard passes in.

use crate::engine::credentials::{self, InvalidCredentials, credentials_id, secrets_equal};
use crate::store::record::{Credentials, DeviceRecord, ProfileRecord, ReprovisionPolicy, Strategy};

/// Longest device name, in characters (ThingsBoard's `@Length(255)`).
pub const MAX_DEVICE_NAME_CHARS: usize = 255;

/// The transport a request arrived on; recorded on the device and used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `POST /api/v1/provision`
    Http,
    /// `/provision/request`
    Mqtt,
    /// CoAP `POST /api/v1/provision`
    Coap,
}

impl Transport {
    /// Upper-case name, as stored and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "HTTP",
            Transport::Mqtt => "MQTT",
            Transport::Coap => "COAP",
        }
    }
}

/// A secret whose `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What the device asked for, as far as credentials go (SPEC §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestedCredentials {
    /// No credential field set: the server generates an access token.
    None,
    /// Well-formed credentials the device wants.
    Valid(Credentials),
    /// Credential fields were set but do not form valid credentials (rule 3: FAILURE).
    Invalid(InvalidCredentials),
}

/// A provisioning request, decoded from any transport.
#[derive(Clone, Debug)]
pub struct Request {
    /// `provisionDeviceKey`
    pub provision_key: String,
    /// `provisionDeviceSecret`
    pub provision_secret: Secret,
    /// `deviceName` as sent (not yet trimmed); `None` when absent or empty.
    pub device_name: Option<String>,
    /// The requested credentials.
    pub credentials: RequestedCredentials,
    /// `gateway`
    pub gateway: bool,
    /// Where it came from.
    pub transport: Transport,
}

/// Wire status of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `NOT_FOUND`
    NotFound,
    /// `FAILURE`
    Failure,
}

/// Every reason a provisioning request is refused. The wire only shows the [`Status`];
/// the reason goes to the log and the metrics' `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Rule 1: `deviceName` blank after trimming.
    #[error("device name is blank")]
    BlankName,
    /// Rule 2: key or secret empty.
    #[error("provision key or secret is empty")]
    EmptyKeyOrSecret,
    /// Rule 2: no profile has that key.
    #[error("unknown provision key")]
    UnknownKey,
    /// Rule 2: the profile's strategy is DISABLED.
    #[error("profile is disabled")]
    ProfileDisabled,
    /// Rule 2: the secret does not match.
    #[error("wrong provision secret")]
    WrongSecret,
    /// Rule 3: the requested credentials are malformed.
    #[error("invalid credentials: {0:?}")]
    InvalidCredentials(InvalidCredentials),
    /// A new device's name is too long or contains control characters.
    #[error("invalid device name")]
    InvalidName,
    /// The requested credentials id belongs to another device.
    #[error("credentials already belong to another device")]
    CredentialsTaken,
    /// The device exists in another profile.
    #[error("device belongs to another profile")]
    DeviceInOtherProfile,
    /// RETURN_EXISTING, but the request names credentials other than the stored ones.
    #[error("device is provisioned with other credentials")]
    CredentialsMismatch,
    /// REJECT policy and the device is already provisioned.
    #[error("device is already provisioned")]
    AlreadyProvisioned,
    /// CHECK_PRE_PROVISIONED_DEVICES without a device name.
    #[error("device name required by profile")]
    NameRequired,
    /// CHECK_PRE_PROVISIONED_DEVICES and no such device.
    #[error("device is not pre-provisioned")]
    NotPreProvisioned,
    /// The shard's mailbox stayed full for the enqueue timeout.
    #[error("server overloaded")]
    Overloaded,
    /// The engine is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// The store failed; details are in the log.
    #[error("storage failure")]
    Storage,
}

impl ProvisionError {
    /// The wire status (SPEC §3).
    pub fn status(self) -> Status {
        match self {
            ProvisionError::EmptyKeyOrSecret
            | ProvisionError::UnknownKey
            | ProvisionError::ProfileDisabled
            | ProvisionError::WrongSecret => Status::NotFound,
            _ => Status::Failure,
        }
    }

    /// A stable snake_case name for logs and metric labels; never contains request data.
    pub fn reason(self) -> &'static str {
        match self {
            ProvisionError::BlankName => "blank_name",
            ProvisionError::EmptyKeyOrSecret => "empty_key_or_secret",
            ProvisionError::UnknownKey => "unknown_key",
            ProvisionError::ProfileDisabled => "profile_disabled",
            ProvisionError::WrongSecret => "wrong_secret",
            ProvisionError::InvalidCredentials(_) => "invalid_credentials",
            ProvisionError::InvalidName => "invalid_name",
            ProvisionError::CredentialsTaken => "credentials_taken",
            ProvisionError::DeviceInOtherProfile => "device_in_other_profile",
            ProvisionError::CredentialsMismatch => "credentials_mismatch",
            ProvisionError::AlreadyProvisioned => "already_provisioned",
            ProvisionError::NameRequired => "name_required",
            ProvisionError::NotPreProvisioned => "not_pre_provisioned",
            ProvisionError::Overloaded => "overloaded",
            ProvisionError::ShuttingDown => "shutting_down",
            ProvisionError::Storage => "storage",
        }
    }
}

/// The device name a request is decided under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceName {
    /// Given by the device, trimmed.
    Given(String),
    /// Generated because the request had none (only usable under ALLOW_CREATE).
    Generated(String),
}

impl DeviceName {
    /// The name itself.
    pub fn as_str(&self) -> &str {
        match self {
            DeviceName::Given(name) | DeviceName::Generated(name) => name,
        }
    }
}

/// Rule 1: trims a given name; absent names get a generated one.
pub fn resolve_name(
    device_name: Option<&str>,
    generate: impl FnOnce() -> String,
) -> Result<DeviceName, ProvisionError> {
    match device_name {
        None | Some("") => Ok(DeviceName::Generated(generate())),
        Some(raw) => {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                Err(ProvisionError::BlankName)
            } else {
                Ok(DeviceName::Given(trimmed.to_string()))
            }
        }
    }
}

/// Whether a new device may carry this name (SPEC §1).
pub fn valid_device_name(name: &str) -> bool {
    // Nearly every name is printable ASCII: one pass over its bytes settles it, where the
    // general rule decodes the UTF-8 twice (about 400 instructions per request).
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return name.len() <= MAX_DEVICE_NAME_CHARS;
    }
    name.chars().count() <= MAX_DEVICE_NAME_CHARS && !name.chars().any(char::is_control)
}

/// Rule 2, on its own so that transports can answer NOT_FOUND without a shard round trip.
pub fn authenticate(
    request: &Request,
    profile: Option<&ProfileRecord>,
) -> Result<(), ProvisionError> {
    if request.provision_key.is_empty() || request.provision_secret.0.is_empty() {
        return Err(ProvisionError::EmptyKeyOrSecret);
    }
    let profile = profile.ok_or(ProvisionError::UnknownKey)?;
    // The secret is compared even for a disabled profile, so timing does not tell them apart.
    let secret_ok = secrets_equal(&request.provision_secret.0, &profile.provision_secret);
    if profile.strategy == Strategy::Disabled {
        return Err(ProvisionError::ProfileDisabled);
    }
    if !secret_ok {
        return Err(ProvisionError::WrongSecret);
    }
    Ok(())
}

/// Whether the requested credentials id is free for this device, as the owning shard saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The request names no credentials.
    NotRequested,
    /// Free, or already this device's.
    Free,
    /// Owned (or being claimed) by another device.
    Taken,
}

/// A device write the shard must stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceWrite {
    /// The device's new state.
    pub record: DeviceRecord,
    /// A credentials id newly owned by this device, to be indexed.
    pub claimed_id: Option<String>,
}

/// The result of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What the device is told.
    pub outcome: Result<Credentials, ProvisionError>,
    /// What must be durable before it is told.
    pub write: Option<DeviceWrite>,
}

impl Decision {
    fn refuse(error: ProvisionError) -> Decision {
        Decision {
            outcome: Err(error),
            write: None,
        }
    }
}

/// Everything [`decide`] reads besides the request.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The resolved device name.
    pub name: &'a DeviceName,
    /// The profile found by the request's key.
    pub profile: Option<&'a ProfileRecord>,
    /// The stored device of that name, if any.
    pub existing: Option<&'a DeviceRecord>,
    /// Whether the requested credentials id is free.
    pub claim: Claim,
    /// Now, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// Decides a request per SPEC §4. `fresh_token` yields a server-generated token that the caller
/// has already verified to be unclaimed.
pub fn decide(
    request: &Request,
    facts: &Facts<'_>,
    fresh_token: &mut dyn FnMut() -> String,
) -> Decision {
    if let Err(error) = authenticate(request, facts.profile) {
        return Decision::refuse(error);
    }
    let profile = facts
        .profile
        .expect("authenticate succeeded, so the profile exists");
    if let RequestedCredentials::Invalid(problem) = request.credentials {
        return Decision::refuse(ProvisionError::InvalidCredentials(problem));
    }
    match profile.strategy {
        Strategy::AllowCreateNewDevices => allow_create(request, facts, profile, fresh_token),
        Strategy::CheckPreProvisionedDevices => check_pre(request, facts, profile, fresh_token),
        Strategy::Disabled => Decision::refuse(ProvisionError::ProfileDisabled),
    }
}

fn allow_create(
    request: &Request,
    facts: &Facts<'_>,
    profile: &ProfileRecord,
    fresh_token: &mut dyn FnMut() -> String,
) -> Decision {
    let Some(existing) = facts.existing else {
        let name = facts.name.as_str();
        if !valid_device_name(name) {
            return Decision::refuse(ProvisionError::InvalidName);
        }
        let device_type = profile.device_type.as_ref().unwrap_or(&profile.name);
        let record = DeviceRecord {
            gateway: request.gateway,
            ..DeviceRecord::new(name, &profile.name, device_type, facts.now_ms)
        };
        return assign_and_provision(request, facts, record, fresh_token);
    };
    if existing.profile != profile.name {
        return Decision::refuse(ProvisionError::DeviceInOtherProfile);
    }
    match (&existing.credentials, existing.provisioned) {
        (Some(stored), true) => match profile.reprovision_policy {
            ReprovisionPolicy::Reject => Decision::refuse(ProvisionError::AlreadyProvisioned),
            ReprovisionPolicy::ReturnExisting => match &request.credentials {
                RequestedCredentials::Valid(wanted) if wanted != stored => {
                    Decision::refuse(ProvisionError::CredentialsMismatch)
                }
                _ => Decision {
                    outcome: Ok(stored.clone()),
                    write: None,
                },
            },
        },
        // Imported into an ALLOW_CREATE profile, or reset: provision it like a pre-provisioned one.
        _ => provision_existing(request, facts, existing, fresh_token),
    }
}

fn check_pre(
    request: &Request,
    facts: &Facts<'_>,
    profile: &ProfileRecord,
    fresh_token: &mut dyn FnMut() -> String,
) -> Decision {
    if matches!(facts.name, DeviceName::Generated(_)) {
        return Decision::refuse(ProvisionError::NameRequired);
    }
    let Some(existing) = facts.existing else {
        return Decision::refuse(ProvisionError::NotPreProvisioned);
    };
    if existing.profile != profile.name {
        return Decision::refuse(ProvisionError::DeviceInOtherProfile);
    }
    match (&existing.credentials, existing.provisioned) {
        (Some(stored), true) => match profile.reprovision_policy {
            ReprovisionPolicy::Reject => Decision::refuse(ProvisionError::AlreadyProvisioned),
            ReprovisionPolicy::ReturnExisting => Decision {
                outcome: Ok(stored.clone()),
                write: None,
            },
        },
        _ => provision_existing(request, facts, existing, fresh_token),
    }
}

/// An existing, unprovisioned device: keep its credentials (request ignored, as ThingsBoard
/// does) or assign the requested or a generated one; then mark it provisioned.
fn provision_existing(
    request: &Request,
    facts: &Facts<'_>,
    existing: &DeviceRecord,
    fresh_token: &mut dyn FnMut() -> String,
) -> Decision {
    let mut record = existing.clone();
    if let Some(stored) = &existing.credentials {
        let stored = stored.clone();
        mark_provisioned(&mut record, request, facts);
        return Decision {
            outcome: Ok(stored),
            write: Some(DeviceWrite {
                record,
                claimed_id: None,
            }),
        };
    }
    assign_and_provision(request, facts, record, fresh_token)
}

fn assign_and_provision(
    request: &Request,
    facts: &Facts<'_>,
    mut record: DeviceRecord,
    fresh_token: &mut dyn FnMut() -> String,
) -> Decision {
    let credentials = match &request.credentials {
        RequestedCredentials::Valid(wanted) => {
            if facts.claim == Claim::Taken {
                return Decision::refuse(ProvisionError::CredentialsTaken);
            }
            wanted.clone()
        }
        _ => Credentials::AccessToken {
            token: fresh_token(),
        },
    };
    let claimed_id = credentials_id(&credentials);
    record.credentials = Some(credentials.clone());
    mark_provisioned(&mut record, request, facts);
    Decision {
        outcome: Ok(credentials),
        write: Some(DeviceWrite {
            record,
            claimed_id: Some(claimed_id),
        }),
    }
}

fn mark_provisioned(record: &mut DeviceRecord, request: &Request, facts: &Facts<'_>) {
    record.provisioned = true;
    record.provisioned_at_ms = Some(facts.now_ms);
    record.provisioned_via = Some(request.transport.as_str().to_string());
    if request.gateway {
        record.gateway = true;
    }
}

/// Re-exported for the shard: the credentials id a request wants, if any.
pub fn requested_id(request: &Request) -> Option<String> {
    match &request.credentials {
        RequestedCredentials::Valid(c) => Some(credentials::credentials_id(c)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
