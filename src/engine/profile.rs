//! Device profiles: the registry of record in the store and its read-mostly cache by provision key.
//! Writes are rare and serialized by one mutex; reads (every request) are lock-free map lookups.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::engine::credentials::generate_lowercase_base36;
use crate::store::record::{ProfileRecord, ReprovisionPolicy, Strategy};
use crate::store::{Store, StoreError};

/// Longest profile name, in characters.
pub const MAX_PROFILE_NAME_CHARS: usize = 255;
/// Longest provision key or secret, in bytes.
pub const MAX_KEY_OR_SECRET_BYTES: usize = 256;

/// Errors of profile administration.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A profile of that name exists.
    #[error("a profile named {0:?} already exists")]
    NameExists(String),
    /// Another profile has that provision key.
    #[error("another profile already uses that provision key")]
    KeyExists,
    /// No profile of that name.
    #[error("no profile named {0:?}")]
    NotFound(String),
    /// Devices still belong to the profile.
    #[error("profile {0:?} still has devices; delete them first or force the deletion")]
    HasDevices(String),
    /// A field is invalid.
    #[error("invalid profile: {0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an operator gives to create a profile; absent key and secret are generated.
#[derive(Clone, Default)]
pub struct NewProfile {
    /// Unique name.
    pub name: String,
    /// Strategy.
    pub strategy: Option<Strategy>,
    /// Provision key, generated when absent.
    pub provision_key: Option<String>,
    /// Provision secret, generated when absent.
    pub provision_secret: Option<String>,
    /// Re-provision policy (RETURN_EXISTING by default).
    pub reprovision_policy: Option<ReprovisionPolicy>,
    /// Device type for new devices.
    pub device_type: Option<String>,
}

impl std::fmt::Debug for NewProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProfile")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("provision_key", &self.provision_key)
            .field(
                "provision_secret",
                &self.provision_secret.as_ref().map(|_| "***"),
            )
            .finish_non_exhaustive()
    }
}

/// A change to a profile; `None` leaves a field as it is.
#[derive(Clone, Default)]
pub struct ProfileUpdate {
    /// New strategy.
    pub strategy: Option<Strategy>,
    /// New secret.
    pub provision_secret: Option<String>,
    /// New policy.
    pub reprovision_policy: Option<ReprovisionPolicy>,
    /// New device type (`Some(None)` clears it).
    pub device_type: Option<Option<String>>,
}

impl std::fmt::Debug for ProfileUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileUpdate")
            .field("strategy", &self.strategy)
            .field(
                "provision_secret",
                &self.provision_secret.as_ref().map(|_| "***"),
            )
            .finish_non_exhaustive()
    }
}

/// The profiles, cached in memory and written through to the store.
pub struct ProfileRegistry {
    store: Arc<Store>,
    by_key: DashMap<String, Arc<ProfileRecord>>,
    by_name: DashMap<String, Arc<ProfileRecord>>,
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for ProfileRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileRegistry")
            .field("profiles", &self.by_name.len())
            .finish()
    }
}

impl ProfileRegistry {
    /// Loads every profile from the store. The cache is complete: a miss means no such profile.
    pub fn load(store: Arc<Store>) -> Result<ProfileRegistry, StoreError> {
        let registry = ProfileRegistry {
            store,
            by_key: DashMap::new(),
            by_name: DashMap::new(),
            write_lock: Mutex::new(()),
        };
        for profile in registry.store.profiles()? {
            let profile = Arc::new(profile);
            registry
                .by_key
                .insert(profile.provision_key.clone(), profile.clone());
            registry.by_name.insert(profile.name.clone(), profile);
        }
        Ok(registry)
    }

    /// The profile with this provision key.
    pub fn by_key(&self, key: &str) -> Option<Arc<ProfileRecord>> {
        self.by_key.get(key).map(|entry| entry.value().clone())
    }

    /// The profile with this name.
    pub fn by_name(&self, name: &str) -> Option<Arc<ProfileRecord>> {
        self.by_name.get(name).map(|entry| entry.value().clone())
    }

    /// Every profile, sorted by name.
    pub fn list(&self) -> Vec<Arc<ProfileRecord>> {
        let mut all: Vec<_> = self.by_name.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a profile; durable before it is visible to requests.
    pub fn create(&self, new: NewProfile, now_ms: u64) -> Result<Arc<ProfileRecord>, ProfileError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        validate_name(&new.name)?;
        if self.by_name.contains_key(&new.name) {
            return Err(ProfileError::NameExists(new.name));
        }
        let provision_key = new.provision_key.unwrap_or_else(generate_lowercase_base36);
        let provision_secret = new
            .provision_secret
            .unwrap_or_else(generate_lowercase_base36);
        validate_key_or_secret("provisionDeviceKey", &provision_key)?;
        validate_key_or_secret("provisionDeviceSecret", &provision_secret)?;
        if self.by_key.contains_key(&provision_key) {
            return Err(ProfileError::KeyExists);
        }
        let record = ProfileRecord {
            name: new.name,
            provision_key,
            provision_secret,
            strategy: new.strategy.unwrap_or(Strategy::AllowCreateNewDevices),
            reprovision_policy: new
                .reprovision_policy
                .unwrap_or(ReprovisionPolicy::ReturnExisting),
            device_type: new.device_type.filter(|t| !t.is_empty()),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        self.store.put_profile(&record)?;
        let record = Arc::new(record);
        self.by_key
            .insert(record.provision_key.clone(), record.clone());
        self.by_name.insert(record.name.clone(), record.clone());
        Ok(record)
    }

    /// Applies an update; durable before requests see it.
    pub fn update(
        &self,
        name: &str,
        update: ProfileUpdate,
        now_ms: u64,
    ) -> Result<Arc<ProfileRecord>, ProfileError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self
            .by_name(name)
            .ok_or_else(|| ProfileError::NotFound(name.to_string()))?;
        let mut record = (*current).clone();
        if let Some(strategy) = update.strategy {
            record.strategy = strategy;
        }
        if let Some(secret) = update.provision_secret {
            validate_key_or_secret("provisionDeviceSecret", &secret)?;
            record.provision_secret = secret;
        }
        if let Some(policy) = update.reprovision_policy {
            record.reprovision_policy = policy;
        }
        if let Some(device_type) = update.device_type {
            record.device_type = device_type.filter(|t| !t.is_empty());
        }
        record.updated_at_ms = now_ms;
        self.store.put_profile(&record)?;
        let record = Arc::new(record);
        self.by_key
            .insert(record.provision_key.clone(), record.clone());
        self.by_name.insert(record.name.clone(), record.clone());
        Ok(record)
    }

    /// Removes a profile from the store and the cache. Devices are the engine's business.
    pub(crate) fn remove(&self, name: &str) -> Result<Arc<ProfileRecord>, ProfileError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self
            .by_name(name)
            .ok_or_else(|| ProfileError::NotFound(name.to_string()))?;
        self.store.delete_profile(name)?;
        self.by_key.remove(&current.provision_key);
        self.by_name.remove(name);
        Ok(current)
    }
}

impl ProfileRegistry {
    /// Puts a removed profile back into the cache (rollback of a refused delete).
    pub(crate) fn restore(&self, profile: Arc<ProfileRecord>) {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.by_key
            .insert(profile.provision_key.clone(), profile.clone());
        self.by_name.insert(profile.name.clone(), profile);
    }
}

fn validate_name(name: &str) -> Result<(), ProfileError> {
    if name.trim().is_empty() {
        return Err(ProfileError::Invalid("name must not be blank".into()));
    }
    if name.chars().count() > MAX_PROFILE_NAME_CHARS {
        return Err(ProfileError::Invalid(format!(
            "name is longer than {MAX_PROFILE_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) || name.contains('/') {
        return Err(ProfileError::Invalid(
            "name must not contain control characters or '/'".into(),
        ));
    }
    Ok(())
}

fn validate_key_or_secret(field: &str, value: &str) -> Result<(), ProfileError> {
    if value.is_empty() {
        return Err(ProfileError::Invalid(format!("{field} must not be empty")));
    }
    if value.len() > MAX_KEY_OR_SECRET_BYTES {
        return Err(ProfileError::Invalid(format!(
            "{field} is longer than {MAX_KEY_OR_SECRET_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ProfileError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn registry(dir: &std::path::Path) -> ProfileRegistry {
        let store = Arc::new(Store::open(dir, &StoreOptions::default()).unwrap());
        ProfileRegistry::load(store).unwrap()
    }

    #[test]
    fn created_profile_gets_generated_key_and_secret_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let created = {
            let reg = registry(dir.path());
            reg.create(
                NewProfile {
                    name: "fleet".into(),
                    ..NewProfile::default()
                },
                5,
            )
            .unwrap()
        };
        assert_eq!(created.provision_key.len(), 20);
        assert_ne!(created.provision_key, created.provision_secret);
        assert_eq!(created.strategy, Strategy::AllowCreateNewDevices);
        let reg = registry(dir.path());
        assert_eq!(reg.by_key(&created.provision_key).unwrap().name, "fleet");
    }

    #[test]
    fn duplicate_name_or_key_is_refused_and_changes_are_visible_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let new = |name: &str, key: &str| NewProfile {
            name: name.into(),
            provision_key: Some(key.into()),
            ..NewProfile::default()
        };
        reg.create(new("a", "k1"), 0).unwrap();
        assert!(matches!(
            reg.create(new("a", "k2"), 0),
            Err(ProfileError::NameExists(_))
        ));
        assert!(matches!(
            reg.create(new("b", "k1"), 0),
            Err(ProfileError::KeyExists)
        ));
        let updated = reg
            .update(
                "a",
                ProfileUpdate {
                    provision_secret: Some("new".into()),
                    ..ProfileUpdate::default()
                },
                1,
            )
            .unwrap();
        assert_eq!(reg.by_key("k1").unwrap().provision_secret, "new");
        assert_eq!(updated.updated_at_ms, 1);
        reg.remove("a").unwrap();
        assert!(reg.by_key("k1").is_none());
        assert!(reg.by_name("a").is_none());
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        for name in ["", "  ", "a/b", "a\nb"] {
            let result = reg.create(
                NewProfile {
                    name: name.into(),
                    ..NewProfile::default()
                },
                0,
            );
            assert!(matches!(result, Err(ProfileError::Invalid(_))), "{name:?}");
        }
    }
}
