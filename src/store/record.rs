//! On-disk record types: a format-version byte followed by bincode.
//! These types exist for the disk; their encoding is pinned by golden-bytes tests below.

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The first byte of every stored value. Bump it (and keep a decoder for the old one) when a
/// record's layout changes.
pub const FORMAT_VERSION: u8 = 1;

/// How a device profile decides provisioning requests (SPEC §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Unknown names become new devices.
    AllowCreateNewDevices,
    /// Only names imported beforehand may provision.
    CheckPreProvisionedDevices,
    /// The profile answers every request with NOT_FOUND.
    Disabled,
}

/// What a second request for an already provisioned device gets (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReprovisionPolicy {
    /// The stored credentials again (idempotent replay).
    ReturnExisting,
    /// FAILURE, as ThingsBoard does.
    Reject,
}

/// A device profile as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Unique profile name.
    pub name: String,
    /// Globally unique provision key.
    pub provision_key: String,
    /// The provision secret (plain text: it is shown to the operator on request).
    pub provision_secret: String,
    /// Provisioning strategy.
    pub strategy: Strategy,
    /// Behaviour on repeated requests.
    pub reprovision_policy: ReprovisionPolicy,
    /// Device type given to new devices; the profile name when absent.
    pub device_type: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl std::fmt::Debug for ProfileRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileRecord")
            .field("name", &self.name)
            .field("provision_key", &self.provision_key)
            .field("provision_secret", &"***")
            .field("strategy", &self.strategy)
            .field("reprovision_policy", &self.reprovision_policy)
            .field("device_type", &self.device_type)
            .finish_non_exhaustive()
    }
}

/// A device's credentials: exactly one kind (SPEC §1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credentials {
    /// The token is also the credentials id.
    AccessToken {
        /// The access token.
        token: String,
    },
    /// MQTT basic credentials; the id is derived per SPEC §1.
    MqttBasic {
        /// MQTT client id (may be empty).
        client_id: String,
        /// MQTT user name (may be empty).
        user_name: String,
        /// MQTT password (may be empty).
        password: String,
    },
    /// An X.509 certificate, armour and line breaks removed.
    X509 {
        /// Base64 of the certificate, as ThingsBoard stores it.
        value: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::AccessToken { .. } => f.write_str("AccessToken(***)"),
            Credentials::MqttBasic { .. } => f.write_str("MqttBasic(***)"),
            Credentials::X509 { value } => write!(f, "X509({} bytes)", value.len()),
        }
    }
}

/// A device as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Unique device name.
    pub name: String,
    /// Name of the profile the device belongs to.
    pub profile: String,
    /// Device type.
    pub device_type: String,
    /// Optional label.
    pub label: Option<String>,
    /// Optional description (bulk import).
    pub description: Option<String>,
    /// Whether the device is a gateway.
    pub gateway: bool,
    /// Server-scope attributes as (key, JSON text) pairs.
    pub server_attributes: Vec<(String, String)>,
    /// Shared attributes as (key, JSON text) pairs.
    pub shared_attributes: Vec<(String, String)>,
    /// Telemetry values from bulk import as (key, JSON text) pairs.
    pub telemetry: Vec<(String, String)>,
    /// `provisionState == "provisioned"`.
    pub provisioned: bool,
    /// The device's credentials, if any.
    pub credentials: Option<Credentials>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the device last provisioned.
    pub provisioned_at_ms: Option<u64>,
    /// Over which transport it provisioned (`HTTP`, `MQTT`, `COAP`).
    pub provisioned_via: Option<String>,
    /// The bulk import run that last wrote the device, if any (catches names repeated in a file).
    pub import_id: Option<u64>,
}

impl DeviceRecord {
    /// A device just created: no label, attributes or credentials yet, not provisioned.
    pub fn new(
        name: impl Into<String>,
        profile: impl Into<String>,
        device_type: impl Into<String>,
        created_at_ms: u64,
    ) -> DeviceRecord {
        DeviceRecord {
            name: name.into(),
            profile: profile.into(),
            device_type: device_type.into(),
            label: None,
            description: None,
            gateway: false,
            server_attributes: Vec::new(),
            shared_attributes: Vec::new(),
            telemetry: Vec::new(),
            provisioned: false,
            credentials: None,
            created_at_ms,
            provisioned_at_ms: None,
            provisioned_via: None,
            import_id: None,
        }
    }
}

/// Value of the credentials index: which device owns a credentials id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsOwner {
    /// The owning device's name.
    pub device: String,
}

/// The one bincode configuration used on disk.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Bytes reserved for an encoded record: a device with a name, a profile, a type and an access
/// token takes about 100.
const ENCODE_CAPACITY: usize = 192;

/// Encodes a record with its leading format-version byte.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Room for a provisioned device's record, so that it is written without growing the Vec
    // five times over (those reallocations were 1.5% of a provisioning request's instructions).
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(record, &mut out, bincode_config())
        .expect("encoding into a Vec cannot fail");
    out
}

/// Decodes a record written by [`encode`].
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            let (value, used) = bincode::serde::decode_from_slice(body, bincode_config())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if used != body.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} trailing bytes after record",
                    body.len() - used
                )));
            }
            Ok(value)
        }
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "unknown record format version {version}"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_device() -> DeviceRecord {
        DeviceRecord {
            name: "dev".into(),
            profile: "p".into(),
            device_type: "t".into(),
            label: Some("l".into()),
            description: None,
            gateway: true,
            server_attributes: vec![("a".into(), "1".into())],
            shared_attributes: vec![],
            telemetry: vec![],
            provisioned: true,
            credentials: Some(Credentials::AccessToken {
                token: "tok".into(),
            }),
            created_at_ms: 1,
            provisioned_at_ms: Some(300),
            provisioned_via: Some("HTTP".into()),
            import_id: None,
        }
    }

    #[test]
    fn device_record_encoding_is_pinned() {
        let bytes = encode(&sample_device());
        assert_eq!(
            hex::encode(&bytes),
            "01036465760170017401016c00010101610131000001010003746f6b0101fb2c0101044854545000"
        );
        assert_eq!(decode::<DeviceRecord>(&bytes).unwrap(), sample_device());
    }

    #[test]
    fn profile_record_encoding_is_pinned() {
        let profile = ProfileRecord {
            name: "p".into(),
            provision_key: "k".into(),
            provision_secret: "s".into(),
            strategy: Strategy::CheckPreProvisionedDevices,
            reprovision_policy: ReprovisionPolicy::Reject,
            device_type: None,
            created_at_ms: 2,
            updated_at_ms: 3,
        };
        let bytes = encode(&profile);
        assert_eq!(hex::encode(&bytes), "010170016b01730101000203");
        assert_eq!(decode::<ProfileRecord>(&bytes).unwrap(), profile);
    }

    #[test]
    fn credentials_encoding_is_pinned() {
        let basic = Credentials::MqttBasic {
            client_id: "c".into(),
            user_name: "u".into(),
            password: "p".into(),
        };
        assert_eq!(hex::encode(encode(&basic)), "0101016301750170");
        let owner = CredentialsOwner { device: "d".into() };
        assert_eq!(hex::encode(encode(&owner)), "010164");
    }

    #[test]
    fn unknown_version_and_trailing_bytes_are_corrupt() {
        assert!(decode::<CredentialsOwner>(&[9, 1, b'd']).is_err());
        assert!(decode::<CredentialsOwner>(&[1, 1, b'd', 0]).is_err());
        assert!(decode::<CredentialsOwner>(&[]).is_err());
    }
}
