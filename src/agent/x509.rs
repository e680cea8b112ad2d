//! The device's X.509 identity, made as the gateway makes it (TB-REFERENCE §12.3): an EC P-256
//! key and a self-signed certificate, subject and issuer CN=localhost, SHA-256 signature,
//! valid from yesterday for 365 days, random serial; `cert.pem` and `key.pem` (traditional
//! `EC PRIVATE KEY`, mode 0600) in the config directory.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::Rng;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SerialNumber};

use super::error::AgentError;
use super::store::write_atomic;

/// The certificate file name the gateway uses.
pub const CERT_FILE: &str = "cert.pem";
/// The key file name the gateway uses.
pub const KEY_FILE: &str = "key.pem";

/// `<dir>/cert.pem`.
pub fn cert_path(dir: &Path) -> PathBuf {
    dir.join(CERT_FILE)
}

/// `<dir>/key.pem`.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

/// The certificate PEM to send in `hash`. An existing `cert.pem` and `key.pem` pair is kept
/// (the device's identity survives a credentials reset, so that under RETURN_EXISTING it gets
/// its device back); otherwise a new pair is generated and written.
pub fn load_or_generate(dir: &Path) -> Result<String, AgentError> {
    let (cert, key) = (cert_path(dir), key_path(dir));
    if cert.exists() && key.exists() {
        let pem = std::fs::read_to_string(&cert).map_err(|e| {
            AgentError::CorruptCredentials(format!("cannot read {}: {e}", cert.display()))
        })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(AgentError::CorruptCredentials(format!(
                "{} holds no PEM certificate; remove it and {} to generate a new pair",
                cert.display(),
                key.display()
            )));
        }
        return Ok(pem);
    }
    let (cert_pem, key_pem) = generate()?;
    write_atomic(key, key_pem.as_bytes(), 0o600)?;
    write_atomic(cert, cert_pem.as_bytes(), 0o644)?;
    Ok(cert_pem)
}

/// A new (certificate PEM, SEC1 key PEM) pair.
pub fn generate() -> Result<(String, String), AgentError> {
    let failed = |e: rcgen::Error| {
        AgentError::NotConfigured(format!("cannot generate the device certificate: {e}"))
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "localhost");
    params.distinguished_name = name;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = params.not_before + time::Duration::days(365);
    let mut serial: [u8; 16] = rand::rng().random();
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(failed)?;
    let sec1 = sec1_der(&key).ok_or_else(|| {
        AgentError::NotConfigured("cannot encode the device key as EC PRIVATE KEY".into())
    })?;
    Ok((cert.pem(), pem("EC PRIVATE KEY", &sec1)))
}

/// The key as RFC 5915 `ECPrivateKey` with the curve named, which is what OpenSSL's
/// traditional format holds; rcgen (ring) gives PKCS#8, whose inner key omits the curve.
fn sec1_der(key: &KeyPair) -> Option<Vec<u8>> {
    let pkcs8 = key.serialize_der();
    let inner = yasna::parse_der(&pkcs8, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_der()?; // the algorithm identifier
            let inner = r.next().read_bytes()?;
            r.read_optional(|r| r.read_der())?;
            Ok(inner)
        })
    })
    .ok()?;
    let private = yasna::parse_der(&inner, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            let private = r.next().read_bytes()?;
            r.read_optional(|r| r.read_der())?;
            r.read_optional(|r| r.read_der())?;
            Ok(private)
        })
    })
    .ok()?;
    let public = key.public_key_raw();
    let prime256v1 = yasna::models::ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 3, 1, 7]);
    Some(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_bytes(&private);
            w.next()
                .write_tagged(yasna::Tag::context(0), |w| w.write_oid(&prime256v1));
            w.next().write_tagged(yasna::Tag::context(1), |w| {
                w.write_bitvec_bytes(public, public.len() * 8)
            });
        })
    }))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_is_a_p256_certificate_and_a_traditional_ec_key() {
        let (cert, key) = generate().unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        // 121 bytes: version, 32-byte scalar, [0] prime256v1, [1] 65-byte point.
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(der.len(), 121);
        assert_eq!(&der[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
    }
}
