//! The simulated fleet: device i's name, the credentials it asks for (or was imported with), its
//! provisioning request, and its row of the pre-provisioned CSV.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::args::{CredentialsKind, Mix, Scenario};

/// Credentials as the wire states them: the response's `credentialsType` and `credentialsValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    /// `ACCESS_TOKEN`, `MQTT_BASIC` or `X509_CERTIFICATE`.
    pub kind: String,
    /// The token, the certificate (base64, no armour), or `{clientId,userName,password}`.
    pub value: Value,
}

/// Everything a run needs to know to build devices.
#[derive(Debug)]
pub struct Fleet {
    /// Name prefix of this run.
    pub prefix: String,
    /// Profile key and secret.
    pub key: String,
    /// Profile secret.
    pub secret: String,
    /// New or pre-provisioned devices.
    pub scenario: Scenario,
    /// Credentials kinds by index.
    pub credentials: Mix<CredentialsKind>,
    /// One Ed25519 key pair signs every device certificate (they differ by subject and serial).
    /// Ed25519 signatures are deterministic, so device i's certificate is the same every time
    /// it is built: a replay sends exactly the certificate the device was provisioned with.
    cert_key: rcgen::KeyPair,
}

impl Fleet {
    /// A fleet for one run.
    pub fn new(
        prefix: String,
        key: String,
        secret: String,
        scenario: Scenario,
        credentials: Mix<CredentialsKind>,
    ) -> anyhow::Result<Fleet> {
        Ok(Fleet {
            prefix,
            key,
            secret,
            scenario,
            credentials,
            cert_key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
        })
    }

    /// Device i's name.
    pub fn name(&self, i: u64) -> String {
        format!("{}-{i:09}", self.prefix)
    }

    /// The credentials device i brings (None: the server generates a token).
    pub fn own_credentials(&self, i: u64) -> Option<Creds> {
        match self.credentials.pick(i) {
            CredentialsKind::Token => None,
            CredentialsKind::Supplied => Some(Creds {
                kind: "ACCESS_TOKEN".into(),
                value: Value::String(format!("tok-{}-{i}", self.prefix)),
            }),
            CredentialsKind::Basic => Some(Creds {
                kind: "MQTT_BASIC".into(),
                value: json!({
                    "clientId": format!("c-{}-{i}", self.prefix),
                    "userName": format!("u-{}-{i}", self.prefix),
                    "password": format!("p-{i}"),
                }),
            }),
            CredentialsKind::X509 => Some(Creds {
                kind: "X509_CERTIFICATE".into(),
                value: Value::String(self.certificate(i)),
            }),
        }
    }

    /// A self-signed certificate for device i, base64 DER (the wire's X.509 value).
    fn certificate(&self, i: u64) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("no subject alternative names to check");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.name(i));
        params.serial_number = Some(rcgen::SerialNumber::from(i.to_be_bytes().to_vec()));
        let cert = params
            .self_signed(&self.cert_key)
            .expect("signing with a generated key works");
        base64::engine::general_purpose::STANDARD.encode(cert.der())
    }

    /// Device i's provisioning request body (JSON).
    pub fn request(&self, i: u64) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("deviceName".into(), self.name(i).into());
        body.insert("provisionDeviceKey".into(), self.key.clone().into());
        body.insert("provisionDeviceSecret".into(), self.secret.clone().into());
        // A pre-provisioned device was imported with its credentials and only names itself.
        if self.scenario == Scenario::New
            && let Some(creds) = self.own_credentials(i)
        {
            body.insert("credentialsType".into(), creds.kind.clone().into());
            match creds.kind.as_str() {
                "ACCESS_TOKEN" => {
                    body.insert("token".into(), creds.value);
                }
                "MQTT_BASIC" => {
                    body.insert("clientId".into(), creds.value["clientId"].clone());
                    body.insert("username".into(), creds.value["userName"].clone());
                    body.insert("password".into(), creds.value["password"].clone());
                }
                _ => {
                    body.insert("hash".into(), creds.value);
                }
            }
        }
        serde_json::to_vec(&Value::Object(body)).expect("JSON encodes")
    }

    /// The header of the pre-provisioned CSV.
    pub const CSV_HEADER: &'static str =
        "name,accessToken,mqttClientId,mqttUserName,mqttPassword,x509\n";

    /// Device i's row of the pre-provisioned CSV.
    pub fn csv_row(&self, i: u64, out: &mut String) {
        use std::fmt::Write as _;
        let name = self.name(i);
        let own = self.own_credentials(i);
        let v = own.as_ref().map(|c| (c.kind.as_str(), &c.value));
        let (token, client, user, pass, cert) = match v {
            None => ("", "", "", "", ""),
            Some(("ACCESS_TOKEN", v)) => (text(v), "", "", "", ""),
            Some(("MQTT_BASIC", v)) => (
                "",
                text(&v["clientId"]),
                text(&v["userName"]),
                text(&v["password"]),
                "",
            ),
            Some((_, v)) => ("", "", "", "", text(v)),
        };
        // Names, tokens and base64 contain no commas, quotes or line breaks.
        let _ = writeln!(out, "{name},{token},{client},{user},{pass},{cert}");
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Reads a provisioning response body: Ok(credentials) on SUCCESS, Err(`STATUS: errorMsg`).
pub fn parse_response(body: &[u8]) -> Result<Creds, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "unreadable response: {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        )
    })?;
    match v["status"].as_str() {
        Some("SUCCESS") => Ok(Creds {
            kind: text(&v["credentialsType"]).to_string(),
            value: v["credentialsValue"].clone(),
        }),
        Some(status) => Err(format!("{status}: {}", text(&v["errorMsg"]))),
        None => Err("response without status".into()),
    }
}
