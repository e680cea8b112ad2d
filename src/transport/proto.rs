//! ThingsBoard's protobuf provisioning messages (`transport.ProvisionDeviceRequestMsg` and
//! `ProvisionDeviceResponseMsg`, field numbers in TB-REFERENCE §2.2), the fallback for MQTT and
//! CoAP payloads that are not a JSON object. Shared by both transports.

use prost::Message;

use crate::engine::provision::{ProvisionError, Request, Secret, Status, Transport};
use crate::store::record::Credentials;
use crate::transport::wire::{self, CredentialFields, ParseError, RequestedType};

/// `transport.CredentialsType`
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum CredentialsTypeProto {
    /// `ACCESS_TOKEN = 0`
    AccessToken = 0,
    /// `X509_CERTIFICATE = 1`
    X509Certificate = 1,
    /// `MQTT_BASIC = 2`
    MqttBasic = 2,
    /// `LWM2M_CREDENTIALS = 3`
    Lwm2mCredentials = 3,
}

/// `transport.ResponseStatus`
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseStatusProto {
    /// `UNKNOWN = 0`
    Unknown = 0,
    /// `SUCCESS = 1`
    Success = 1,
    /// `NOT_FOUND = 2`
    NotFound = 2,
    /// `FAILURE = 3`
    Failure = 3,
}

/// `ProvisionDeviceCredentialsMsg`
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
pub struct ProvisionDeviceCredentialsMsg {
    /// `provisionDeviceKey = 1`
    #[prost(string, tag = "1")]
    pub provision_device_key: String,
    /// `provisionDeviceSecret = 2`
    #[prost(string, tag = "2")]
    pub provision_device_secret: String,
}

/// `ValidateDeviceTokenRequestMsg`
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
pub struct ValidateDeviceTokenRequestMsg {
    /// `token = 1`
    #[prost(string, tag = "1")]
    pub token: String,
}

/// `ValidateDeviceX509CertRequestMsg`
#[derive(Clone, PartialEq, Message)]
pub struct ValidateDeviceX509CertRequestMsg {
    /// `hash = 1`
    #[prost(string, tag = "1")]
    pub hash: String,
}

/// `ValidateBasicMqttCredRequestMsg`
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
pub struct ValidateBasicMqttCredRequestMsg {
    /// `clientId = 1`
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// `userName = 2`
    #[prost(string, tag = "2")]
    pub user_name: String,
    /// `password = 3`
    #[prost(string, tag = "3")]
    pub password: String,
}

/// `CredentialsDataProto`
#[derive(Clone, PartialEq, Message)]
pub struct CredentialsDataProto {
    /// `validateDeviceTokenRequestMsg = 1`
    #[prost(message, optional, tag = "1")]
    pub validate_device_token_request_msg: Option<ValidateDeviceTokenRequestMsg>,
    /// `validateDeviceX509CertRequestMsg = 2`
    #[prost(message, optional, tag = "2")]
    pub validate_device_x509_cert_request_msg: Option<ValidateDeviceX509CertRequestMsg>,
    /// `validateBasicMqttCredRequestMsg = 3`
    #[prost(message, optional, tag = "3")]
    pub validate_basic_mqtt_cred_request_msg: Option<ValidateBasicMqttCredRequestMsg>,
}

/// `ProvisionDeviceRequestMsg`
#[derive(Clone, PartialEq, Message)]
pub struct ProvisionDeviceRequestMsg {
    /// `deviceName = 1`
    #[prost(string, tag = "1")]
    pub device_name: String,
    /// `credentialsType = 2`
    #[prost(enumeration = "CredentialsTypeProto", tag = "2")]
    pub credentials_type: i32,
    /// `provisionDeviceCredentialsMsg = 3`
    #[prost(message, optional, tag = "3")]
    pub provision_device_credentials_msg: Option<ProvisionDeviceCredentialsMsg>,
    /// `credentialsDataProto = 4`
    #[prost(message, optional, tag = "4")]
    pub credentials_data_proto: Option<CredentialsDataProto>,
    /// `gateway = 5`
    #[prost(bool, tag = "5")]
    pub gateway: bool,
}

/// `ProvisionDeviceResponseMsg`
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
pub struct ProvisionDeviceResponseMsg {
    /// `status = 1`
    #[prost(enumeration = "ResponseStatusProto", tag = "1")]
    pub status: i32,
    /// `credentialsType = 2`
    #[prost(enumeration = "CredentialsTypeProto", tag = "2")]
    pub credentials_type: i32,
    /// `credentialsValue = 3` (for MQTT basic, the JSON text of the credentials object)
    #[prost(string, tag = "3")]
    pub credentials_value: String,
}

/// `Debug` of the messages that carry a secret, a token or a password: those print `***`.
macro_rules! redacted_debug {
    ($($name:ident),*) => {$(
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(***)"))
            }
        }
    )*};
}
redacted_debug!(
    ProvisionDeviceCredentialsMsg,
    ValidateDeviceTokenRequestMsg,
    ValidateBasicMqttCredRequestMsg,
    ProvisionDeviceResponseMsg
);

/// How a payload was encoded; the reply uses the same encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// ThingsBoard JSON.
    Json,
    /// ThingsBoard protobuf.
    Protobuf,
}

/// Which decoder a payload goes to: JSON if it starts like a JSON object, else protobuf. The
/// reply uses that encoding even when decoding fails.
pub fn payload_encoding(payload: &[u8]) -> Encoding {
    let looks_like_json = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if looks_like_json {
        Encoding::Json
    } else {
        Encoding::Protobuf
    }
}

/// Decodes a payload as ThingsBoard does on MQTT and CoAP: a JSON object first; anything that
/// does not start like a JSON object is tried as protobuf.
pub fn decode_payload(
    payload: &[u8],
    transport: Transport,
) -> Result<(Request, Encoding), ParseError> {
    match payload_encoding(payload) {
        Encoding::Json => wire::parse_json(payload, transport).map(|r| (r, Encoding::Json)),
        Encoding::Protobuf => decode_protobuf(payload, transport).map(|r| (r, Encoding::Protobuf)),
    }
}

/// Decodes `ProvisionDeviceRequestMsg`. Proto3 is permissive: an empty payload is an empty
/// request, which the rules answer with NOT_FOUND, as ThingsBoard does.
pub fn decode_protobuf(payload: &[u8], transport: Transport) -> Result<Request, ParseError> {
    let msg = ProvisionDeviceRequestMsg::decode(payload).map_err(|e| {
        ParseError(format!(
            "payload is neither a JSON object nor a ProvisionDeviceRequestMsg: {e}"
        ))
    })?;
    let kind = match CredentialsTypeProto::try_from(msg.credentials_type) {
        Ok(CredentialsTypeProto::AccessToken) => RequestedType::AccessToken,
        Ok(CredentialsTypeProto::X509Certificate) => RequestedType::X509Certificate,
        Ok(CredentialsTypeProto::MqttBasic) => RequestedType::MqttBasic,
        Ok(CredentialsTypeProto::Lwm2mCredentials) => RequestedType::Lwm2m,
        Err(_) => {
            return Err(ParseError(format!(
                "unknown credentialsType {} in ProvisionDeviceRequestMsg",
                msg.credentials_type
            )));
        }
    };
    let keys = msg.provision_device_credentials_msg.unwrap_or_default();
    let data = msg.credentials_data_proto.unwrap_or_default();
    let basic = data
        .validate_basic_mqtt_cred_request_msg
        .unwrap_or_default();
    let fields = CredentialFields {
        token: data
            .validate_device_token_request_msg
            .map(|t| t.token)
            .unwrap_or_default(),
        client_id: basic.client_id,
        username: basic.user_name,
        password: basic.password,
        hash: data
            .validate_device_x509_cert_request_msg
            .map(|x| x.hash)
            .unwrap_or_default(),
    };
    Ok(Request {
        provision_key: keys.provision_device_key,
        provision_secret: Secret(keys.provision_device_secret),
        device_name: Some(msg.device_name).filter(|n| !n.is_empty()),
        credentials: wire::requested_credentials(kind, fields),
        gateway: msg.gateway,
        transport,
    })
}

/// Encodes an outcome as `ProvisionDeviceResponseMsg` (TB-REFERENCE §5.2).
pub fn encode_outcome(result: &Result<Credentials, ProvisionError>) -> Vec<u8> {
    let msg = match result {
        Ok(credentials) => {
            let (kind, value) = match credentials {
                Credentials::AccessToken { token } => {
                    (CredentialsTypeProto::AccessToken, token.clone())
                }
                Credentials::X509 { value } => {
                    (CredentialsTypeProto::X509Certificate, value.clone())
                }
                Credentials::MqttBasic {
                    client_id,
                    user_name,
                    password,
                } => (
                    CredentialsTypeProto::MqttBasic,
                    wire::mqtt_basic_json(client_id, user_name, password),
                ),
            };
            ProvisionDeviceResponseMsg {
                status: ResponseStatusProto::Success as i32,
                credentials_type: kind as i32,
                credentials_value: value,
            }
        }
        Err(error) => refusal(error.status()),
    };
    msg.encode_to_vec()
}

/// The response to a payload that could not be decoded at all.
pub fn encode_parse_error() -> Vec<u8> {
    refusal(Status::Failure).encode_to_vec()
}

fn refusal(status: Status) -> ProvisionDeviceResponseMsg {
    ProvisionDeviceResponseMsg {
        status: match status {
            Status::NotFound => ResponseStatusProto::NotFound as i32,
            Status::Failure => ResponseStatusProto::Failure as i32,
        },
        credentials_type: 0,
        credentials_value: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::provision::RequestedCredentials;

    #[test]
    fn responses_match_thingsboard_bytes() {
        assert_eq!(
            encode_outcome(&Err(ProvisionError::UnknownKey)),
            [0x08, 0x02]
        );
        assert_eq!(
            encode_outcome(&Err(ProvisionError::CredentialsTaken)),
            [0x08, 0x03]
        );
        let token = encode_outcome(&Ok(Credentials::AccessToken {
            token: "abc".into(),
        }));
        assert_eq!(token, [0x08, 0x01, 0x1a, 0x03, b'a', b'b', b'c']);
        let x509 = encode_outcome(&Ok(Credentials::X509 {
            value: "QQ==".into(),
        }));
        assert_eq!(
            x509,
            [0x08, 0x01, 0x10, 0x01, 0x1a, 0x04, b'Q', b'Q', b'=', b'=']
        );
        let basic = encode_outcome(&Ok(Credentials::MqttBasic {
            client_id: "c".into(),
            user_name: "u".into(),
            password: "p".into(),
        }));
        let text = r#"{"clientId":"c","userName":"u","password":"p"}"#;
        let mut expected = vec![0x08, 0x01, 0x10, 0x02, 0x1a, text.len() as u8];
        expected.extend_from_slice(text.as_bytes());
        assert_eq!(basic, expected);
    }

    #[test]
    fn request_round_trips_through_protobuf() {
        let msg = ProvisionDeviceRequestMsg {
            device_name: "dev".into(),
            credentials_type: CredentialsTypeProto::MqttBasic as i32,
            provision_device_credentials_msg: Some(ProvisionDeviceCredentialsMsg {
                provision_device_key: "k".into(),
                provision_device_secret: "s".into(),
            }),
            credentials_data_proto: Some(CredentialsDataProto {
                validate_basic_mqtt_cred_request_msg: Some(ValidateBasicMqttCredRequestMsg {
                    client_id: "c".into(),
                    user_name: "u".into(),
                    password: "p".into(),
                }),
                ..Default::default()
            }),
            gateway: true,
        };
        let (request, encoding) = decode_payload(&msg.encode_to_vec(), Transport::Mqtt).unwrap();
        assert_eq!(encoding, Encoding::Protobuf);
        assert_eq!(request.provision_key, "k");
        assert_eq!(request.provision_secret.0, "s");
        assert_eq!(request.device_name.as_deref(), Some("dev"));
        assert!(request.gateway);
        assert_eq!(
            request.credentials,
            RequestedCredentials::Valid(Credentials::MqttBasic {
                client_id: "c".into(),
                user_name: "u".into(),
                password: "p".into()
            })
        );
    }

    #[test]
    fn json_objects_stay_json_and_garbage_is_a_parse_error() {
        let (_, encoding) = decode_payload(
            br#" {"provisionDeviceKey":"k","provisionDeviceSecret":"s"}"#,
            Transport::Coap,
        )
        .unwrap();
        assert_eq!(encoding, Encoding::Json);
        assert!(decode_payload(&[0xff, 0xff, 0xff], Transport::Coap).is_err());
        let (empty, _) = decode_payload(b"", Transport::Coap).unwrap();
        assert_eq!(
            empty.provision_key, "",
            "an empty proto3 message is an empty request"
        );
    }
}
