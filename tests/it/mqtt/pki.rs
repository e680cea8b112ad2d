//! A test PKI generated at test time with rcgen: a CA, a server certificate for localhost and
//! 127.0.0.1 signed by it, a client certificate signed by it, and a client certificate signed
//! by an unrelated CA. Written as PEM files for provisiond and mosquitto.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate with its key, as PEM files and DER.
pub struct Identity {
    /// The certificate PEM file.
    pub cert: PathBuf,
    /// The private key PEM file.
    pub key: PathBuf,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// Everything a TLS test needs; the files live as long as this value.
pub struct Pki {
    _dir: tempfile::TempDir,
    /// The CA certificate PEM file (the server's and the clients' trust anchor).
    pub ca: PathBuf,
    ca_der: CertificateDer<'static>,
    /// The server identity.
    pub server: Identity,
    /// A client identity signed by the CA.
    pub client: Identity,
    /// A client identity signed by another CA.
    pub stranger: Identity,
}

impl Pki {
    /// Generates a fresh PKI in a temporary directory.
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_params, ca_key) = ca("provisiond test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).expect("write CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server = leaf(
            dir.path(),
            "server",
            &issuer,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            dir.path(),
            "client",
            &issuer,
            vec!["device-1".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (other_params, other_key) = ca("unrelated CA");
        let other = Issuer::new(other_params, other_key);
        let stranger = leaf(
            dir.path(),
            "stranger",
            &other,
            vec!["device-2".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            _dir: dir,
            ca: ca_path,
            ca_der: ca_cert.der().clone(),
            server,
            client,
            stranger,
        }
    }

    /// Configures the server's TLS listener (certificate and key; no client CA).
    pub fn configure(&self, config: &mut provisiond::config::Config) {
        config.mqtt.tls_cert_file = Some(self.server.cert.clone());
        config.mqtt.tls_key_file = Some(self.server.key.clone());
    }

    /// A rustls client trusting the test CA, presenting `identity` if given.
    pub fn client_config(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA is a valid root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => builder
                .with_client_auth_cert(
                    vec![identity.der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
                )
                .expect("client identity"),
        };
        Arc::new(config)
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, KeyPair::generate().expect("CA key"))
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Identity {
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    Identity {
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}
