//! ThingsBoard's provisioning request and response, byte for byte (SPEC §2, §3).
//! The only module that knows ThingsBoard's JSON field names and error strings.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::engine::credentials::{
    InvalidCredentials, MAX_CERTIFICATE_BYTES, MAX_CREDENTIAL_FIELD_BYTES, check_field,
    credentials_type, x509_value,
};
use crate::engine::provision::{
    ProvisionError, Request, RequestedCredentials, Secret, Status, Transport,
};
use crate::store::record::Credentials;

/// The NOT_FOUND body.
pub const NOT_FOUND_BODY: &str =
    r#"{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}"#;
/// The FAILURE body for every refusal that is not NOT_FOUND.
pub const FAILURE_BODY: &str = r#"{"errorMsg":"Failed to provision device!","status":"FAILURE"}"#;

/// A request that cannot be parsed at all; its message goes into `errorMsg`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Parses a JSON provisioning request.
pub fn parse_json(body: &[u8], transport: Transport) -> Result<Request, ParseError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ParseError(if body.is_empty() {
            "request body is empty; expected a JSON object".into()
        } else {
            "request body is not a JSON object".into()
        }));
    }
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
        ParseError(format!(
            "request body is not a valid provisioning request: {}",
            describe(&e)
        ))
    })?;
    raw.into_request(transport)
}

/// serde_json's message without the echo of input it sometimes carries.
fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!(
                "invalid JSON at line {} column {}",
                error.line(),
                error.column()
            )
        }
        _ => text,
    }
}

/// The credentials kinds the request may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedType {
    /// `ACCESS_TOKEN`
    AccessToken,
    /// `MQTT_BASIC`
    MqttBasic,
    /// `X509_CERTIFICATE`
    X509Certificate,
    /// `LWM2M_CREDENTIALS` (accepted by the parser, refused by the rules)
    Lwm2m,
}

impl RequestedType {
    /// Parses ThingsBoard's exact, upper-case names.
    pub fn parse(text: &str) -> Option<RequestedType> {
        match text {
            "ACCESS_TOKEN" => Some(RequestedType::AccessToken),
            "MQTT_BASIC" => Some(RequestedType::MqttBasic),
            "X509_CERTIFICATE" => Some(RequestedType::X509Certificate),
            "LWM2M_CREDENTIALS" => Some(RequestedType::Lwm2m),
            _ => None,
        }
    }
}

/// The credential fields of a request, as decoded from JSON or protobuf.
#[derive(Clone, Default)]
pub struct CredentialFields {
    /// `token`
    pub token: String,
    /// `clientId`
    pub client_id: String,
    /// `username`
    pub username: String,
    /// `password`
    pub password: String,
    /// `hash`
    pub hash: String,
}

impl std::fmt::Debug for CredentialFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialFields(***)")
    }
}

/// SPEC §2: which credentials the fields ask for, or why they are invalid.
pub fn requested_credentials(kind: RequestedType, f: CredentialFields) -> RequestedCredentials {
    let any = [&f.token, &f.client_id, &f.username, &f.password, &f.hash]
        .iter()
        .any(|v| !v.is_empty());
    if !any {
        return RequestedCredentials::None;
    }
    let checked = match kind {
        RequestedType::AccessToken => {
            if f.token.is_empty() {
                Err(InvalidCredentials::MissingToken)
            } else {
                check_field(&f.token, MAX_CREDENTIAL_FIELD_BYTES)
                    .map(|()| Credentials::AccessToken { token: f.token })
            }
        }
        RequestedType::MqttBasic => {
            if f.client_id.is_empty() && f.username.is_empty() {
                Err(InvalidCredentials::MqttBasicWithoutClientIdOrUserName)
            } else if !f.client_id.is_empty() && !f.password.is_empty() && f.username.is_empty() {
                Err(InvalidCredentials::MqttBasicPasswordWithoutUserName)
            } else {
                check_field(&f.client_id, MAX_CREDENTIAL_FIELD_BYTES)
                    .and_then(|()| check_field(&f.username, MAX_CREDENTIAL_FIELD_BYTES))
                    .and_then(|()| check_field(&f.password, MAX_CREDENTIAL_FIELD_BYTES))
                    .map(|()| Credentials::MqttBasic {
                        client_id: f.client_id,
                        user_name: f.username,
                        password: f.password,
                    })
            }
        }
        RequestedType::X509Certificate => {
            let value = x509_value(&f.hash);
            if value.is_empty() {
                Err(InvalidCredentials::MissingCertificate)
            } else if value.len() > MAX_CERTIFICATE_BYTES {
                Err(InvalidCredentials::TooLong)
            } else {
                Ok(Credentials::X509 { value })
            }
        }
        RequestedType::Lwm2m => Err(InvalidCredentials::Lwm2mNotSupported),
    };
    match checked {
        Ok(credentials) => RequestedCredentials::Valid(credentials),
        Err(problem) => RequestedCredentials::Invalid(problem),
    }
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(rename = "provisionDeviceKey", default)]
    provision_key: Text,
    #[serde(rename = "provisionDeviceSecret", default)]
    provision_secret: Text,
    #[serde(rename = "deviceName", default)]
    device_name: Text,
    #[serde(rename = "credentialsType", default)]
    credentials_type: Text,
    #[serde(default)]
    token: Text,
    #[serde(rename = "clientId", default)]
    client_id: Text,
    #[serde(default)]
    username: Text,
    #[serde(default)]
    password: Text,
    #[serde(default)]
    hash: Text,
    #[serde(default)]
    gateway: Text,
}

impl RawRequest {
    fn into_request(self, transport: Transport) -> Result<Request, ParseError> {
        let provision_key = self
            .provision_key
            .0
            .ok_or_else(|| ParseError("provisionDeviceKey is missing".into()))?;
        let provision_secret = self
            .provision_secret
            .0
            .ok_or_else(|| ParseError("provisionDeviceSecret is missing".into()))?;
        let kind = match self.credentials_type.0.as_deref() {
            None => RequestedType::AccessToken,
            Some(text) => RequestedType::parse(text).ok_or_else(|| {
                ParseError(
                    "credentialsType must be ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE".into(),
                )
            })?,
        };
        let fields = CredentialFields {
            token: self.token.0.unwrap_or_default(),
            client_id: self.client_id.0.unwrap_or_default(),
            username: self.username.0.unwrap_or_default(),
            password: self.password.0.unwrap_or_default(),
            hash: self.hash.0.unwrap_or_default(),
        };
        Ok(Request {
            provision_key,
            provision_secret: Secret(provision_secret),
            device_name: self.device_name.0.filter(|n| !n.is_empty()),
            credentials: requested_credentials(kind, fields),
            // Gson's getAsBoolean: JSON true, or the text "true" in any case.
            gateway: self
                .gateway
                .0
                .is_some_and(|g| g.eq_ignore_ascii_case("true")),
            transport,
        })
    }
}

/// A string field read as ThingsBoard reads it: strings as they are, numbers and booleans as
/// their text, `null` as absent (a deviation: ThingsBoard fails on `null`).
#[derive(Default)]
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// The body for a provisioning outcome (SPEC §3).
pub fn outcome_json(result: &Result<Credentials, ProvisionError>) -> Cow<'static, str> {
    match result {
        Ok(credentials) => Cow::Owned(success_json(credentials)),
        Err(error) => Cow::Borrowed(refusal_json(error.status())),
    }
}

/// The SUCCESS body: keys in ThingsBoard's order, compact.
pub fn success_json(credentials: &Credentials) -> String {
    // Appended piece by piece into one buffer: `format!` around a value escaped into a String
    // of its own cost about 1,000 instructions per response, serde's derive more (a map entry
    // per field). 128 bytes hold the body of a generated token.
    let mut out = String::with_capacity(128);
    out.push_str(r#"{"credentialsValue":"#);
    match credentials {
        Credentials::AccessToken { token } => push_json_string(&mut out, token),
        Credentials::X509 { value } => push_json_string(&mut out, value),
        Credentials::MqttBasic {
            client_id,
            user_name,
            password,
        } => push_mqtt_basic_json(&mut out, client_id, user_name, password),
    }
    out.push_str(r#","credentialsType":""#);
    out.push_str(credentials_type(credentials).as_str());
    out.push_str(r#"","status":"SUCCESS"}"#);
    out
}

/// MQTT basic credentials as ThingsBoard writes them: keys `clientId`, `userName`, `password`,
/// in that order.
pub fn mqtt_basic_json(client_id: &str, user_name: &str, password: &str) -> String {
    let mut out = String::new();
    push_mqtt_basic_json(&mut out, client_id, user_name, password);
    out
}

fn push_mqtt_basic_json(out: &mut String, client_id: &str, user_name: &str, password: &str) {
    out.push_str(r#"{"clientId":"#);
    push_json_string(out, client_id);
    out.push_str(r#","userName":"#);
    push_json_string(out, user_name);
    out.push_str(r#","password":"#);
    push_json_string(out, password);
    out.push('}');
}

/// The body for a refusal of the given status.
pub fn refusal_json(status: Status) -> &'static str {
    match status {
        Status::NotFound => NOT_FOUND_BODY,
        Status::Failure => FAILURE_BODY,
    }
}

/// The body for a request that could not be parsed.
pub fn parse_error_json(error: &ParseError) -> String {
    format!(
        r#"{{"errorMsg":{},"status":"FAILURE"}}"#,
        json_string(&error.0)
    )
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes it.
fn push_json_string(out: &mut String, text: &str) {
    // serde_json escapes only `"`, `\` and control characters below U+0020; a value with none
    // of them (every generated token) is copied as it is.
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&json_string(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Request, ParseError> {
        parse_json(body.as_bytes(), Transport::Http)
    }

    #[test]
    fn minimal_request_parses_with_server_generated_token() {
        let req =
            parse(r#"{"provisionDeviceKey":"k","provisionDeviceSecret":"s","deviceName":" d "}"#)
                .unwrap();
        assert_eq!(req.provision_key, "k");
        assert_eq!(req.provision_secret.0, "s");
        assert_eq!(req.device_name.as_deref(), Some(" d "));
        assert_eq!(req.credentials, RequestedCredentials::None);
        assert!(!req.gateway);
    }

    #[test]
    fn null_is_absent_and_numbers_are_text() {
        let req = parse(r#"{"provisionDeviceKey":123,"provisionDeviceSecret":true,"deviceName":null,"token":null,"gateway":"TRUE"}"#).unwrap();
        assert_eq!(req.provision_key, "123");
        assert_eq!(req.provision_secret.0, "true");
        assert_eq!(req.device_name, None);
        assert_eq!(req.credentials, RequestedCredentials::None);
        assert!(req.gateway);
    }

    #[test]
    fn malformed_requests_name_the_problem() {
        let cases = [
            ("", "request body is empty; expected a JSON object"),
            ("[1]", "request body is not a JSON object"),
            ("\"x\"", "request body is not a JSON object"),
            (
                r#"{"provisionDeviceSecret":"s"}"#,
                "provisionDeviceKey is missing",
            ),
            (
                r#"{"provisionDeviceKey":"k"}"#,
                "provisionDeviceSecret is missing",
            ),
            (
                r#"{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"FOO"}"#,
                "credentialsType must be ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(parse(body).unwrap_err().0, message, "{body:?}");
        }
        let nested = parse(r#"{"provisionDeviceKey":{"a":1},"provisionDeviceSecret":"s"}"#);
        assert!(
            nested
                .unwrap_err()
                .0
                .starts_with("request body is not a valid provisioning request")
        );
        let broken = parse(r#"{"provisionDeviceKey":"k""#).unwrap_err();
        assert!(broken.0.contains("invalid JSON"), "{broken}");
        assert!(parse_json(b"{\"provisionDeviceKey\":\"\xff\"}", Transport::Http).is_err());
    }

    #[test]
    fn credentials_follow_spec_section_2() {
        use RequestedCredentials::{Invalid, Valid};
        let base = r#""provisionDeviceKey":"k","provisionDeviceSecret":"s""#;
        let creds = |extra: &str| parse(&format!("{{{base},{extra}}}")).unwrap().credentials;
        assert_eq!(
            creds(r#""token":"t""#),
            Valid(Credentials::AccessToken { token: "t".into() })
        );
        assert_eq!(
            creds(r#""credentialsType":"MQTT_BASIC""#),
            RequestedCredentials::None
        );
        assert_eq!(
            creds(r#""username":"u""#),
            Invalid(InvalidCredentials::MissingToken)
        );
        assert_eq!(
            creds(r#""credentialsType":"MQTT_BASIC","clientId":"c","username":"u","password":"p""#),
            Valid(Credentials::MqttBasic {
                client_id: "c".into(),
                user_name: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            creds(r#""credentialsType":"MQTT_BASIC","password":"p""#),
            Invalid(InvalidCredentials::MqttBasicWithoutClientIdOrUserName)
        );
        assert_eq!(
            creds(r#""credentialsType":"MQTT_BASIC","clientId":"c","password":"p""#),
            Invalid(InvalidCredentials::MqttBasicPasswordWithoutUserName)
        );
        assert_eq!(
            creds(
                r#""credentialsType":"X509_CERTIFICATE","hash":"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n""#
            ),
            Valid(Credentials::X509 {
                value: "QUJD".into()
            })
        );
        assert_eq!(
            creds(r#""credentialsType":"LWM2M_CREDENTIALS","token":"t""#),
            Invalid(InvalidCredentials::Lwm2mNotSupported)
        );
        assert_eq!(
            creds(r#""token":"a\u0001b""#),
            Invalid(InvalidCredentials::ControlCharacter)
        );
    }

    #[test]
    fn json_strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut texts: Vec<String> = (0u32..0x250)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        texts.extend(
            ["", "plain", "\"", "\\", "\u{7f}", "\u{2028}", "日本", "😀"].map(String::from),
        );
        for text in texts {
            let mut out = String::new();
            push_json_string(&mut out, &text);
            assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn response_bodies_are_byte_exact() {
        assert_eq!(
            success_json(&Credentials::AccessToken {
                token: "abc".into()
            }),
            r#"{"credentialsValue":"abc","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}"#
        );
        assert_eq!(
            success_json(&Credentials::MqttBasic {
                client_id: "c".into(),
                user_name: "u".into(),
                password: "p".into()
            }),
            r#"{"credentialsValue":{"clientId":"c","userName":"u","password":"p"},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}"#
        );
        assert_eq!(
            success_json(&Credentials::X509 {
                value: "QUJD".into()
            }),
            r#"{"credentialsValue":"QUJD","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}"#
        );
        // Device-supplied values are escaped as JSON strings.
        assert_eq!(
            success_json(&Credentials::MqttBasic {
                client_id: "c\"1".into(),
                user_name: "u\\é".into(),
                password: "p\u{7}".into()
            }),
            r#"{"credentialsValue":{"clientId":"c\"1","userName":"u\\é","password":"p\u0007"},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}"#
        );
        assert_eq!(
            refusal_json(Status::NotFound),
            r#"{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}"#
        );
        assert_eq!(
            refusal_json(Status::Failure),
            r#"{"errorMsg":"Failed to provision device!","status":"FAILURE"}"#
        );
        assert_eq!(
            parse_error_json(&ParseError("say \"hi\"".into())),
            r#"{"errorMsg":"say \"hi\"","status":"FAILURE"}"#
        );
    }

    #[test]
    fn every_refusal_maps_to_one_of_the_two_bodies() {
        use ProvisionError::*;
        let not_found = [EmptyKeyOrSecret, UnknownKey, ProfileDisabled, WrongSecret];
        for e in not_found {
            assert_eq!(outcome_json(&Err(e)), NOT_FOUND_BODY);
        }
        let failures = [
            BlankName,
            InvalidName,
            CredentialsTaken,
            DeviceInOtherProfile,
            CredentialsMismatch,
            AlreadyProvisioned,
            NameRequired,
            NotPreProvisioned,
            Overloaded,
            ShuttingDown,
            Storage,
            InvalidCredentials(crate::engine::credentials::InvalidCredentials::TooLong),
        ];
        for e in failures {
            assert_eq!(outcome_json(&Err(e)), FAILURE_BODY);
        }
    }
}
