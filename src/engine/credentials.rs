//! Credentials ids (SPEC §1), generated tokens and names, and constant-time secret comparison.

use rand::{Rng, RngCore};
use sha3::{Digest, Sha3_256};
use subtle::ConstantTimeEq;

use crate::store::record::Credentials;

/// Length of generated tokens and device names (ThingsBoard's `RandomStringUtils` length).
pub const GENERATED_LEN: usize = 20;

/// Longest accepted token, MQTT client id, user name or password, in bytes.
pub const MAX_CREDENTIAL_FIELD_BYTES: usize = 256;

/// Longest accepted X.509 certificate value, in bytes (a chain of a few certificates fits).
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// The wire name of a credentials kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsType {
    /// `ACCESS_TOKEN`
    AccessToken,
    /// `MQTT_BASIC`
    MqttBasic,
    /// `X509_CERTIFICATE`
    X509Certificate,
}

impl CredentialsType {
    /// ThingsBoard's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialsType::AccessToken => "ACCESS_TOKEN",
            CredentialsType::MqttBasic => "MQTT_BASIC",
            CredentialsType::X509Certificate => "X509_CERTIFICATE",
        }
    }
}

/// The kind of a credentials record.
pub fn credentials_type(credentials: &Credentials) -> CredentialsType {
    match credentials {
        Credentials::AccessToken { .. } => CredentialsType::AccessToken,
        Credentials::MqttBasic { .. } => CredentialsType::MqttBasic,
        Credentials::X509 { .. } => CredentialsType::X509Certificate,
    }
}

/// The credentials id: the key under which uniqueness is enforced (SPEC §1).
pub fn credentials_id(credentials: &Credentials) -> String {
    match credentials {
        Credentials::AccessToken { token } => token.clone(),
        Credentials::MqttBasic {
            client_id,
            user_name,
            ..
        } => {
            if client_id.is_empty() {
                user_name.clone()
            } else if user_name.is_empty() {
                sha3_hex(client_id.as_bytes())
            } else {
                sha3_hex(format!("{client_id}|{user_name}").as_bytes())
            }
        }
        Credentials::X509 { value } => sha3_hex(value.as_bytes()),
    }
}

/// Lowercase hex SHA3-256 (FIPS-202).
pub fn sha3_hex(bytes: &[u8]) -> String {
    hex::encode(Sha3_256::digest(bytes))
}

/// ThingsBoard's stored form of a certificate: PEM armour and CR/LF removed, nothing else.
pub fn x509_value(certificate: &str) -> String {
    certificate
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .replace(['\n', '\r'], "")
}

/// A fresh 20-character `[A-Za-z0-9]` string from the OS-seeded CSPRNG.
pub fn generate_alphanumeric() -> String {
    // rand's `Alphanumeric` draws a whole u32 per character through an iterator (about 900
    // instructions per token, on every provisioned device); this takes one block of random
    // bytes and uses 6 bits of each, rejecting 62 and 63 as `Alphanumeric` does, so every
    // character is still uniform over the 62 and comes from the same CSPRNG.
    const CHARSET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut token = String::with_capacity(GENERATED_LEN);
    // 32 bytes give 20 accepted characters except with a probability below 1e-9; then refill.
    let mut block = [0u8; 32];
    while token.len() < GENERATED_LEN {
        rng.fill_bytes(&mut block);
        for &byte in &block {
            if let Some(&c) = CHARSET.get(usize::from(byte >> 2)) {
                token.push(char::from(c));
                if token.len() == GENERATED_LEN {
                    break;
                }
            }
        }
    }
    token
}

/// A fresh 20-character `[0-9a-z]` string, the form of generated provision keys and secrets.
pub fn generate_lowercase_base36() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..GENERATED_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Compares a presented secret with the stored one in constant time: every byte of the stored
/// secret is compared, whatever the presented one holds, so the timing depends on the stored
/// secret's length alone, never on where the two differ nor on how much of it was guessed.
/// (Hashing both sides first, as this did before, hid that length too, at the cost of two
/// BLAKE3 runs per call: about 4% of a provisioning request's instructions.)
pub fn secrets_equal(given: &str, stored: &str) -> bool {
    let (given, stored) = (given.as_bytes(), stored.as_bytes());
    let mut equal = (given.len() as u64).ct_eq(&(stored.len() as u64));
    for (i, byte) in stored.iter().enumerate() {
        // Past the end of a shorter presented secret, a byte that cannot match stands in.
        let presented = given.get(i).copied().unwrap_or(!byte);
        equal &= presented.ct_eq(byte);
    }
    equal.into()
}

/// Why requested credentials cannot be used (SPEC §2); the wire answer is FAILURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidCredentials {
    /// A credential field was set but `token` is empty for `ACCESS_TOKEN`.
    MissingToken,
    /// `MQTT_BASIC` with neither client id nor user name.
    MqttBasicWithoutClientIdOrUserName,
    /// `MQTT_BASIC` with client id and password but no user name.
    MqttBasicPasswordWithoutUserName,
    /// `X509_CERTIFICATE` without a certificate.
    MissingCertificate,
    /// `LWM2M_CREDENTIALS` is not supported for provisioning.
    Lwm2mNotSupported,
    /// A field contains a control character.
    ControlCharacter,
    /// A field is longer than its limit.
    TooLong,
}

/// Checks one credential field: no control characters, within its byte limit.
pub fn check_field(value: &str, max_bytes: usize) -> Result<(), InvalidCredentials> {
    if value.len() > max_bytes {
        return Err(InvalidCredentials::TooLong);
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidCredentials::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_basic_id_matches_spec_test_vector() {
        let creds = Credentials::MqttBasic {
            client_id: "test_clientId".into(),
            user_name: "test_username".into(),
            password: "x".into(),
        };
        assert_eq!(
            credentials_id(&creds),
            "b9f1b0bf238dddae689babba0a210fe42bc97ddb07620b5a07d7208dd5528db2"
        );
    }

    #[test]
    fn mqtt_basic_id_uses_user_name_or_client_id_hash_alone() {
        let user_only = Credentials::MqttBasic {
            client_id: String::new(),
            user_name: "bob".into(),
            password: String::new(),
        };
        assert_eq!(credentials_id(&user_only), "bob");
        let client_only = Credentials::MqttBasic {
            client_id: "c1".into(),
            user_name: String::new(),
            password: String::new(),
        };
        assert_eq!(credentials_id(&client_only), sha3_hex(b"c1"));
    }

    #[test]
    fn x509_id_matches_spec_test_vector() {
        let creds = Credentials::X509 {
            value: x509_value("testHash"),
        };
        assert_eq!(
            credentials_id(&creds),
            "57f6600424d6553263f1f32e0117012894a36fbf07e3e9c3c556272f86b7d985"
        );
    }

    #[test]
    fn x509_value_strips_armour_and_line_breaks_only() {
        let pem = "-----BEGIN CERTIFICATE-----\r\nMIIB a\nbc==\n-----END CERTIFICATE-----\n";
        assert_eq!(x509_value(pem), "MIIB abc==");
    }

    #[test]
    fn generated_tokens_use_every_alphanumeric_character_about_equally() {
        // 62,000 characters: each of the 62 expected 1,000 times (sd ~31). A mapping that
        // dropped characters, or folded the rejected values onto some (a modulo), would put
        // characters at 0 or near 2,000.
        let mut counts = std::collections::HashMap::new();
        for _ in 0..62_000 / GENERATED_LEN {
            for c in generate_alphanumeric().chars() {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        assert_eq!(counts.len(), 62, "characters used: {counts:?}");
        assert!(counts.keys().all(char::is_ascii_alphanumeric));
        for (c, n) in &counts {
            assert!(
                (800..1200).contains(n),
                "{c:?} appeared {n} times of ~1,000"
            );
        }
    }

    #[test]
    fn generated_strings_have_the_specified_alphabets() {
        let token = generate_alphanumeric();
        assert_eq!(token.len(), GENERATED_LEN);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(token, generate_alphanumeric());
        let key = generate_lowercase_base36();
        assert_eq!(key.len(), GENERATED_LEN);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(secrets_equal("s3cret", "s3cret"));
        assert!(!secrets_equal("s3cret", "s3creT"));
        assert!(!secrets_equal("", "s3cret"));
        assert!(!secrets_equal("s3cret", ""));
        assert!(secrets_equal("", ""));
        // A prefix, an extension, and the same bytes past the stored end do not pass.
        assert!(!secrets_equal("s3cre", "s3cret"));
        assert!(!secrets_equal("s3cret!", "s3cret"));
        assert!(!secrets_equal("s3cret\u{0}", "s3cret"));
        assert!(secrets_equal("ключ", "ключ"));
        assert!(!secrets_equal("ключ", "клюз"));
    }

    #[test]
    fn fields_with_control_characters_or_too_long_are_invalid() {
        assert_eq!(
            check_field("a\u{7}b", 10),
            Err(InvalidCredentials::ControlCharacter)
        );
        assert_eq!(check_field("abcdef", 3), Err(InvalidCredentials::TooLong));
        assert_eq!(check_field("ok", 3), Ok(()));
    }
}
