//! `provisiond agent check`: what is stored, validated (for X.509 the key must belong to the
//! certificate), and with `--connect` whether an MQTT server accepts it. provisiond serves
//! provisioning only, so `--connect` is meant for a ThingsBoard-style broker.

use std::path::Path;

use super::error::AgentError;
use super::store::{self, Stored};
use super::transport::{self, Kind};
use super::{Reach, endpoint, x509};

/// What `check` found.
#[derive(Debug)]
pub struct Checked {
    /// The stored credentials.
    pub stored: Stored,
    /// For X.509: the certificate's lines about itself.
    pub notes: Vec<String>,
    /// Whether a CONNECT was tried and accepted.
    pub connected: bool,
}

/// Reads the stored credentials and, with `connect`, CONNECTs with them over MQTT.
pub fn run(config_dir: &Path, connect: Option<&Reach>) -> Result<Checked, AgentError> {
    let stored = store::load(config_dir)?.ok_or_else(|| {
        AgentError::NothingStored(format!(
            "no stored credentials in {}: the next start provisions",
            store::path(config_dir).display()
        ))
    })?;
    let mut notes = Vec::new();
    let mut identity = None;
    if let Stored::X509 { .. } = &stored {
        let (cert, key) = (x509::cert_path(config_dir), x509::key_path(config_dir));
        let chain = transport::tls::read_certs(&cert).map_err(AgentError::CorruptCredentials)?;
        let key_bytes = std::fs::read(&key).map_err(|e| {
            AgentError::CorruptCredentials(format!("cannot read {}: {e}", key.display()))
        })?;
        let private = rustls_pemfile::private_key(&mut &key_bytes[..])
            .ok()
            .flatten()
            .ok_or_else(|| {
                AgentError::CorruptCredentials(format!("{} holds no private key", key.display()))
            })?;
        key_matches(&chain, &private).map_err(|why| {
            AgentError::CorruptCredentials(format!(
                "{} does not belong to {}: {why}",
                key.display(),
                cert.display()
            ))
        })?;
        notes.push(format!(
            "certificate {}, key {} (the key matches the certificate)",
            cert.display(),
            key.display()
        ));
        identity = Some((chain, private));
    }
    let Some(reach) = connect else {
        return Ok(Checked {
            stored,
            notes,
            connected: false,
        });
    };
    if reach.kind != Kind::Mqtt {
        return Err(AgentError::NotConfigured(
            "check --connect speaks MQTT only (--transport mqtt)".into(),
        ));
    }
    let ca_cert = match &stored {
        Stored::X509 { ca_cert } => ca_cert.clone(),
        _ => None,
    };
    let mut reach = reach.clone();
    // X.509 devices connect with mutual TLS, as the gateway does once `caCert` is set.
    reach.tls |= identity.is_some();
    let endpoint = endpoint(&reach, config_dir, ca_cert.as_deref())?;
    let login = match &stored {
        Stored::AccessToken(token) => transport::mqtt::Login {
            client_id: None,
            user_name: Some(token.clone()),
            password: None,
            identity: None,
        },
        Stored::MqttBasic {
            client_id,
            user_name,
            password,
        } => transport::mqtt::Login {
            client_id: client_id.clone(),
            user_name: user_name.clone(),
            password: password.clone(),
            identity: None,
        },
        Stored::X509 { .. } => transport::mqtt::Login {
            client_id: None,
            user_name: None,
            password: None,
            identity,
        },
    };
    match transport::mqtt::connect(&endpoint, &login) {
        Ok(()) => Ok(Checked {
            stored,
            notes,
            connected: true,
        }),
        Err((true, why)) => Err(AgentError::CredentialsRejected(why)),
        Err((false, why)) => Err(AgentError::Unreachable(why)),
    }
}

/// Whether `key` is the private key of the first certificate of `chain`.
fn key_matches(
    chain: &[rustls::pki_types::CertificateDer<'static>],
    key: &rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| e.to_string())?;
    match rustls::sign::CertifiedKey::new(chain.to_vec(), signing).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
