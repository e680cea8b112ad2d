//! The provisioning request the gateway sends (TB-REFERENCE §12.3), as JSON text.

use serde_json::{Map, Value, json};

use super::env::{Provisioning, Wanted};

/// The request body; `certificate_pem` is the device certificate for X.509.
pub fn body(p: &Provisioning, certificate_pem: Option<&str>) -> String {
    let mut request = Map::new();
    request.insert("deviceName".into(), json!(p.device_name));
    request.insert("provisionDeviceKey".into(), json!(p.key));
    request.insert("provisionDeviceSecret".into(), json!(p.secret));
    match &p.wanted {
        Wanted::AccessToken(token) => {
            request.insert("credentialsType".into(), json!("ACCESS_TOKEN"));
            if let Some(token) = token {
                request.insert("token".into(), json!(token));
            }
        }
        Wanted::MqttBasic {
            client_id,
            username,
            password,
        } => {
            request.insert("credentialsType".into(), json!("MQTT_BASIC"));
            for (key, value) in [
                ("clientId", client_id),
                ("username", username),
                ("password", password),
            ] {
                if let Some(value) = value {
                    request.insert(key.into(), json!(value));
                }
            }
        }
        Wanted::X509 { .. } => {
            request.insert("credentialsType".into(), json!("X509_CERTIFICATE"));
            request.insert("hash".into(), json!(certificate_pem.unwrap_or_default()));
        }
    }
    // The gateway marks itself as a gateway device.
    request.insert("gateway".into(), Value::Bool(true));
    Value::Object(request).to_string()
}
