//! The sharded provisioning core: routes each request to the shard that owns its device name,
//! coordinates credentials claims across shards, and hands back the outcome once it is durable.
//! No sockets, no wire formats.

pub mod credentials;
pub mod import;
pub mod profile;
pub mod provision;
pub mod route;
mod shard;
pub mod throttle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use self::credentials::{credentials_id, generate_alphanumeric};
use self::import::{ImportMode, ImportRow, RowOutcome};
use self::profile::{ProfileError, ProfileRegistry};
use self::provision::{Claim, ProvisionError, Request, authenticate, requested_id, resolve_name};
use self::route::{Router, ShardId};
use self::shard::{ClaimInput, ImportItem, Release, Reservation, Shard, ShardLimits, ShardMsg};
use self::throttle::{Throttle, ThrottleOptions};
use crate::metrics as m;
use crate::store::record::{Credentials, DeviceRecord, ProfileRecord};
use crate::store::{Store, StoreError};

pub use self::shard::now_ms;

/// Row indices and their (credentials id, device, ticket) reservations for one arbiter shard.
type ReserveBatch = (Vec<usize>, Vec<(String, String, u64)>);

/// Engine tuning (from `config::EngineConfig`).
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Number of shard threads.
    pub shards: u16,
    /// Capacity of each shard's mailbox.
    pub mailbox_capacity: usize,
    /// Most messages a shard handles in one group commit.
    pub max_batch: usize,
    /// How long a caller waits for room in a full mailbox before it is told FAILURE.
    pub enqueue_timeout: Duration,
    /// Brute-force protection of provision keys and secrets.
    pub throttle: ThrottleOptions,
}

/// What [`Engine::provision`] returns.
#[derive(Debug)]
pub struct Provisioned {
    /// The profile the request's provision key named, whatever the outcome (`None`: no such key).
    pub profile: Option<Arc<ProfileRecord>>,
    /// The credentials, durable, or why there are none.
    pub result: Result<Credentials, ProvisionError>,
}

/// Handle to the running engine; cheap to clone and `Send`, one per transport worker.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    mailboxes: Vec<mpsc::Sender<ShardMsg>>,
    releases: Vec<mpsc::UnboundedSender<Release>>,
    profiles: Arc<ProfileRegistry>,
    store: Arc<Store>,
    enqueue_timeout: Duration,
    throttle: Throttle,
    next_ticket: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ShardMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardMsg")
    }
}

impl Engine {
    /// Loads the profiles and spawns the shard threads.
    pub fn spawn(store: Arc<Store>, options: EngineOptions) -> Result<Engine, StoreError> {
        let profiles = Arc::new(ProfileRegistry::load(store.clone())?);
        let router = Router::new(options.shards);
        let mut mailboxes = Vec::new();
        let mut releases = Vec::new();
        let mut threads = Vec::new();
        for idx in 0..options.shards {
            let (tx, rx) = mpsc::channel(options.mailbox_capacity);
            let (release_tx, release_rx) = mpsc::unbounded_channel();
            let shard = Shard::new(
                ShardId(idx),
                router,
                store.clone(),
                profiles.clone(),
                rx,
                release_rx,
                ShardLimits {
                    max_batch: options.max_batch,
                },
            );
            let thread = std::thread::Builder::new()
                .name(format!("shard-{idx}"))
                .spawn(move || shard.run())
                .map_err(|e| StoreError::Open {
                    path: store.path().to_path_buf(),
                    reason: format!("cannot start shard thread: {e}"),
                })?;
            mailboxes.push(tx);
            releases.push(release_tx);
            threads.push(thread);
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                router,
                mailboxes,
                releases,
                profiles,
                store,
                enqueue_timeout: options.enqueue_timeout,
                throttle: Throttle::new(options.throttle),
                next_ticket: AtomicU64::new(1),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Provisions a device (SPEC §4). Returns only after any write it made is durable, with the
    /// profile the request's key names, so that a caller labelling metrics by profile needs no
    /// second lookup.
    ///
    /// The request comes boxed: an async fn keeps its arguments in its future, and every
    /// transport moves that future around, so an 8-byte box keeps it small.
    pub async fn provision(&self, request: Box<Request>) -> Provisioned {
        let profile = self.inner.profiles.by_key(&request.provision_key);
        let result = self.provision_as(request, profile.clone()).await;
        Provisioned { profile, result }
    }

    async fn provision_as(
        &self,
        request: Box<Request>,
        profile: Option<Arc<ProfileRecord>>,
    ) -> Result<Credentials, ProvisionError> {
        let name = resolve_name(request.device_name.as_deref(), generate_alphanumeric)?;
        // Rule 2 before any hop: a wrong key or secret costs a map lookup, not a shard round trip.
        authenticate(&request, profile.as_deref())?;
        let authenticated = profile.ok_or(ProvisionError::UnknownKey)?;
        let router = self.inner.router;
        let owner = router.shard_for(name.as_str());
        let mut reservation = None;
        let claim = match requested_id(&request) {
            None => ClaimInput::NotRequested,
            Some(id) => {
                let arbiter = router.shard_for(&id);
                if arbiter == owner {
                    ClaimInput::Local(id)
                } else {
                    // Boxed, as the rare path it is: its future would otherwise add to every
                    // request's.
                    let (claim, held) = Box::pin(self.reserve(arbiter, id, name.as_str())).await?;
                    reservation = held;
                    ClaimInput::Remote(claim)
                }
            }
        };
        self.call(owner, |reply| ShardMsg::Provision {
            request,
            name,
            claim,
            authenticated,
            reservation,
            reply,
        })
        .await?
    }

    /// Reserves `id` at its arbiter shard for `device`. The returned reservation, once handed to
    /// the owner shard, is released after the owner's batch is durable.
    async fn reserve(
        &self,
        arbiter: ShardId,
        id: String,
        device: &str,
    ) -> Result<(Claim, Option<Reservation>), ProvisionError> {
        let ticket = self.inner.next_ticket.fetch_add(1, Ordering::Relaxed);
        // Armed before the request is sent: if this future is dropped mid-way, the arbiter
        // either never reserves (its reply channel is closed) or gets the release.
        let guard = Reservation::new(
            self.inner.releases[arbiter.0 as usize].clone(),
            id.clone(),
            ticket,
        );
        let device = device.to_string();
        let claim = self
            .call(arbiter, |reply| ShardMsg::Reserve {
                credentials_id: id,
                device,
                ticket,
                reply,
            })
            .await?;
        Ok((claim, (claim == Claim::Free).then_some(guard)))
    }

    /// Imports rows through the shards that own their names, with the same claim protocol as
    /// provisioning. Rows for one name keep their file order. One outcome per row, in order.
    pub async fn import(&self, rows: Vec<ImportRow>, mode: ImportMode) -> Vec<RowOutcome> {
        let router = self.inner.router;
        let n_shards = router.n_shards() as usize;
        let mut claims: Vec<ClaimInput> = Vec::with_capacity(rows.len());
        let mut guards: Vec<Option<Reservation>> = Vec::with_capacity(rows.len());
        let mut per_arbiter: Vec<ReserveBatch> =
            (0..n_shards).map(|_| (Vec::new(), Vec::new())).collect();
        for (idx, row) in rows.iter().enumerate() {
            let Some(credentials) = &row.credentials else {
                claims.push(ClaimInput::NotRequested);
                guards.push(None);
                continue;
            };
            let id = credentials_id(credentials);
            let arbiter = router.shard_for(&id);
            if arbiter == router.shard_for(&row.name) {
                claims.push(ClaimInput::Local(id));
                guards.push(None);
                continue;
            }
            let ticket = self.inner.next_ticket.fetch_add(1, Ordering::Relaxed);
            guards.push(Some(Reservation::new(
                self.inner.releases[arbiter.0 as usize].clone(),
                id.clone(),
                ticket,
            )));
            claims.push(ClaimInput::Remote(Claim::Taken));
            let (indices, items) = &mut per_arbiter[arbiter.0 as usize];
            indices.push(idx);
            items.push((id, row.name.clone(), ticket));
        }
        // Reserve at every arbiter at once, then collect the answers.
        let mut failures: Vec<Option<ProvisionError>> = vec![None; rows.len()];
        let mut waiting = Vec::new();
        for (arbiter, (indices, items)) in per_arbiter.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let msg = ShardMsg::ReserveMany { items, reply };
            match self.enqueue(ShardId(arbiter as u16), msg).await {
                Ok(()) => waiting.push((indices, answer)),
                Err(error) => indices.iter().for_each(|&i| failures[i] = Some(error)),
            }
        }
        for (indices, answer) in waiting {
            match answer.await {
                Ok(answers) => {
                    for (&i, claim) in indices.iter().zip(answers) {
                        claims[i] = ClaimInput::Remote(claim);
                        if claim != Claim::Free {
                            guards[i] = None;
                        }
                    }
                }
                Err(_) => indices
                    .iter()
                    .for_each(|&i| failures[i] = Some(ProvisionError::ShuttingDown)),
            }
        }
        // Hand each row to its owner, in file order per owner.
        let mut outcomes: Vec<Option<RowOutcome>> = vec![None; rows.len()];
        let mut per_owner: Vec<(Vec<usize>, Vec<ImportItem>)> =
            (0..n_shards).map(|_| (Vec::new(), Vec::new())).collect();
        for (idx, ((row, claim), reservation)) in
            rows.into_iter().zip(claims).zip(guards).enumerate()
        {
            if let Some(error) = failures[idx] {
                outcomes[idx] = Some(RowOutcome::Failed(format!(
                    "{error}; the row was not written"
                )));
                continue;
            }
            let (indices, items) = &mut per_owner[router.shard_for(&row.name).0 as usize];
            indices.push(idx);
            items.push(ImportItem {
                row,
                claim,
                reservation,
            });
        }
        let mut waiting = Vec::new();
        for (owner, (indices, items)) in per_owner.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let msg = ShardMsg::Import {
                rows: items,
                mode,
                reply,
            };
            match self.enqueue(ShardId(owner as u16), msg).await {
                Ok(()) => waiting.push((indices, answer)),
                Err(error) => indices.iter().for_each(|&i| {
                    outcomes[i] = Some(RowOutcome::Failed(format!(
                        "{error}; the row was not written"
                    )));
                }),
            }
        }
        for (indices, answer) in waiting {
            match answer.await {
                Ok(answers) => {
                    for (&i, outcome) in indices.iter().zip(answers) {
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(_) => indices.iter().for_each(|&i| {
                    outcomes[i] = Some(RowOutcome::Failed(
                        "server shutting down; the row was not written".into(),
                    ));
                }),
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every row got an outcome"))
            .collect()
    }

    /// Reads a device.
    pub async fn device(&self, name: &str) -> Result<Option<DeviceRecord>, ProvisionError> {
        let owner = self.inner.router.shard_for(name);
        let name = name.to_string();
        self.call(owner, |reply| ShardMsg::Get { name, reply })
            .await?
    }

    /// Deletes a device and frees its credentials id. Returns whether it existed.
    pub async fn delete_device(&self, name: &str) -> Result<bool, ProvisionError> {
        self.delete_device_in(name, None).await
    }

    async fn delete_device_in(
        &self,
        name: &str,
        profile: Option<String>,
    ) -> Result<bool, ProvisionError> {
        let owner = self.inner.router.shard_for(name);
        let name = name.to_string();
        self.call(owner, |reply| ShardMsg::Delete {
            name,
            profile,
            reply,
        })
        .await?
    }

    /// Puts a device back to unprovisioned, keeping or dropping its credentials.
    pub async fn reset_device(
        &self,
        name: &str,
        drop_credentials: bool,
    ) -> Result<Option<DeviceRecord>, ProvisionError> {
        let owner = self.inner.router.shard_for(name);
        let name = name.to_string();
        self.call(owner, |reply| ShardMsg::Reset {
            name,
            drop_credentials,
            reply,
        })
        .await?
    }

    /// A page of a profile's devices in name order, strictly after `after`.
    /// Reads committed state straight from the store: only writes must go through the shards.
    pub fn list_devices(
        &self,
        profile: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let names = self
            .inner
            .store
            .profile_device_names(profile, after, limit)?;
        let mut devices = Vec::with_capacity(names.len());
        for name in names {
            if let Some(device) = self.inner.store.device(&name)? {
                devices.push(device);
            }
        }
        Ok(devices)
    }

    /// The profile registry.
    pub fn profiles(&self) -> &ProfileRegistry {
        &self.inner.profiles
    }

    /// Deletes a profile. Without `force` it is refused while devices belong to it; with `force`
    /// its devices are deleted too. Returns the removed profile and how many devices went with it.
    pub async fn delete_profile(
        &self,
        name: &str,
        force: bool,
    ) -> Result<(Arc<ProfileRecord>, u64), ProfileError> {
        let store = &self.inner.store;
        if !force && store.profile_has_devices(name)? {
            return Err(ProfileError::HasDevices(name.to_string()));
        }
        let removed = self.inner.profiles.remove(name)?;
        // Requests decided before the removal may still be committing: wait for every shard's
        // current batch, after which no new device of this profile can appear.
        self.barrier().await;
        if !force && store.profile_has_devices(name)? {
            // A device slipped in between the check and the removal: put the profile back.
            store.put_profile(&removed)?;
            self.inner.profiles.restore(removed);
            return Err(ProfileError::HasDevices(name.to_string()));
        }
        let mut deleted = 0u64;
        loop {
            let names = store.profile_device_names(name, None, 1024)?;
            if names.is_empty() {
                break;
            }
            let mut replies = Vec::with_capacity(names.len());
            for device in &names {
                let engine = self.clone();
                let device = device.clone();
                let profile = Some(name.to_string());
                replies.push(async move { engine.delete_device_in(&device, profile).await });
            }
            for reply in replies {
                match reply.await {
                    Ok(true) => deleted += 1,
                    Ok(false) => {}
                    Err(error) => {
                        return Err(ProfileError::Invalid(format!(
                            "deleting the profile's devices failed: {error}"
                        )));
                    }
                }
            }
        }
        Ok((removed, deleted))
    }

    /// Waits until every shard has committed everything sent to it before this call.
    pub async fn barrier(&self) {
        for idx in 0..self.inner.mailboxes.len() {
            let _ = self
                .call(ShardId(idx as u16), |reply| ShardMsg::Barrier { reply })
                .await;
        }
    }

    /// The brute-force protection the transports consult before calling [`Engine::provision`].
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Whether some shard's mailbox is full right now: a new session would likely be refused,
    /// so MQTT refuses it at CONNECT.
    pub fn overloaded(&self) -> bool {
        self.inner
            .mailboxes
            .iter()
            .any(|mailbox| mailbox.capacity() == 0)
    }

    /// Number of shards.
    pub fn n_shards(&self) -> u16 {
        self.inner.router.n_shards()
    }

    /// The store (read-only use: listing, export, statistics).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Whether every shard thread is still running.
    pub fn shards_running(&self) -> bool {
        let threads = self.inner.threads.lock().unwrap_or_else(|p| p.into_inner());
        !threads.is_empty() && threads.iter().all(|t| !t.is_finished())
    }

    /// Stops the shards after they finish the batches in hand, and waits for them.
    /// Messages still queued behind the stop are answered with `ShuttingDown`.
    pub fn shutdown(&self) {
        for mailbox in &self.inner.mailboxes {
            let _ = mailbox.blocking_send(ShardMsg::Shutdown);
        }
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }

    /// Sends a message built around a reply channel and awaits the reply.
    async fn call<T>(
        &self,
        shard: ShardId,
        build: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<T, ProvisionError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(shard, build(reply)).await?;
        answer.await.map_err(|_| ProvisionError::ShuttingDown)
    }

    /// Puts a message in a shard's mailbox, waiting at most the enqueue timeout for room.
    async fn enqueue(&self, shard: ShardId, msg: ShardMsg) -> Result<(), ProvisionError> {
        let mailbox = &self.inner.mailboxes[shard.0 as usize];
        let msg = match mailbox.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ProvisionError::ShuttingDown),
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        m::mailbox_full();
        // Boxed: the wait (a timer and the message) is rare, and inline it would add its size
        // to every request's future.
        match Box::pin(mailbox.send_timeout(msg, self.inner.enqueue_timeout)).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(ProvisionError::Overloaded),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(ProvisionError::ShuttingDown),
        }
    }
}
