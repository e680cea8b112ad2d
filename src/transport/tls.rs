//! The rustls server configuration of the MQTT TLS listener: certificate chain and key from PEM
//! files, and optional client-certificate verification against a CA bundle. Every error names the
//! file it came from. It does not accept connections; `transport::mqtt` does.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

/// Why the TLS listener cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("TLS {what} file {path}: {reason}")]
    File {
        /// Which file: "certificate", "private key" or "client CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("TLS configuration ({cert} with {key}): {reason}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// What the TLS listener is built from.
#[derive(Clone, Debug)]
pub struct TlsFiles<'a> {
    /// PEM certificate chain, leaf first.
    pub cert: &'a Path,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
    /// PEM CA bundle client certificates are verified against; `None`: none is asked for.
    pub client_ca: Option<&'a Path>,
    /// Refuse clients that present no certificate (only with `client_ca`).
    pub client_cert_required: bool,
}

/// Builds the server configuration (TLS 1.2 and 1.3, ring).
pub fn server_config(files: &TlsFiles<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(files.cert, "certificate")?;
    let key = private_key(files.key)?;
    let config_error = |reason: String| TlsError::Config {
        cert: files.cert.to_path_buf(),
        key: files.key.to_path_buf(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(
            ca,
            provider,
            files.client_cert_required,
        )?),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    Ok(Arc::new(config))
}

fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let fail = |reason: String| TlsError::File {
        what: "client CA",
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, "client CA")? {
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    // A device that is about to provision usually has no certificate yet, so by default a
    // certificate is asked for and verified if presented, but not demanded.
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| fail(e.to_string()))
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let fail = |reason: String| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| fail(format!("not valid PEM: {e}")))?
        .ok_or_else(|| fail("holds no PEM private key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn a_generated_pair_with_and_without_client_ca_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let files = TlsFiles {
            cert: &cert,
            key: &key,
            client_ca: None,
            client_cert_required: false,
        };
        server_config(&files).unwrap();
        let with_ca = TlsFiles {
            client_ca: Some(&cert),
            client_cert_required: true,
            ..files
        };
        server_config(&with_ca).unwrap();
    }

    #[test]
    fn every_error_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let cases = [
            (&missing, &key, None, "missing.pem"),
            (&empty, &key, None, "empty.pem"),
            (&cert, &empty, None, "empty.pem"),
            (&cert, &key, Some(&empty), "empty.pem"),
        ];
        for (cert, key, ca, name) in cases {
            let files = TlsFiles {
                cert,
                key,
                client_ca: ca.map(PathBuf::as_path),
                client_cert_required: false,
            };
            let error = server_config(&files).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
        let (other_cert, _) = {
            let other = dir.path().join("other");
            std::fs::create_dir(&other).unwrap();
            write_pair(&other)
        };
        let mismatched = TlsFiles {
            cert: &other_cert,
            key: &key,
            client_ca: None,
            client_cert_required: false,
        };
        let error = server_config(&mismatched).unwrap_err().to_string();
        assert!(error.contains("server.pem"), "{error}");
    }
}
