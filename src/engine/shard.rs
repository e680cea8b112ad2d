//! A shard: one OS thread that alone writes the devices whose names route to it and arbitrates
//! the credentials ids that route to it. It drains its mailbox, decides each message, stages all
//! writes of the drained batch in one `WriteBatch`, commits it with the WAL synced, and only then
//! replies (group commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use foldhash::HashMap as FoldHashMap;
use tokio::sync::{mpsc, oneshot};

use crate::engine::credentials::{credentials_id, generate_alphanumeric};
use crate::engine::import::{ImportMode, ImportRow, ImportWrite, RowOutcome, decide_import};
use crate::engine::profile::ProfileRegistry;
use crate::engine::provision::{
    Claim, DeviceName, DeviceWrite, Facts, ProvisionError, Request, authenticate, decide,
};
use crate::engine::route::{Router, ShardId};
use crate::metrics as m;
use crate::store::record::{Credentials, DeviceRecord, ProfileRecord};
use crate::store::{Store, StoreBatch, StoreError};

/// Reply to a provisioning request.
pub(crate) type ProvisionReply = oneshot::Sender<Result<Credentials, ProvisionError>>;

/// Messages a shard understands.
pub(crate) enum ShardMsg {
    /// Decide and apply a provisioning request for a device this shard owns.
    Provision {
        request: Box<Request>,
        name: DeviceName,
        claim: ClaimInput,
        /// The profile version the key and secret were checked against before the hop.
        authenticated: Arc<ProfileRecord>,
        /// Held until the batch is committed, then dropped, which releases the remote claim.
        reservation: Option<Reservation>,
        reply: ProvisionReply,
    },
    /// Reserve a credentials id this shard arbitrates for a device on another shard.
    Reserve {
        credentials_id: String,
        device: String,
        ticket: u64,
        reply: oneshot::Sender<Claim>,
    },
    /// Reserve several ids at once (bulk import); one claim per item, in order.
    ReserveMany {
        items: Vec<(String, String, u64)>,
        reply: oneshot::Sender<Vec<Claim>>,
    },
    /// Import rows for devices this shard owns, in file order.
    Import {
        rows: Vec<ImportItem>,
        mode: ImportMode,
        reply: oneshot::Sender<Vec<RowOutcome>>,
    },
    /// Read a device (answered after the batch commits, so it never shows unsynced state).
    Get {
        name: String,
        reply: oneshot::Sender<Result<Option<DeviceRecord>, ProvisionError>>,
    },
    /// Delete a device (only if it belongs to `profile`, when given).
    Delete {
        name: String,
        profile: Option<String>,
        reply: oneshot::Sender<Result<bool, ProvisionError>>,
    },
    /// Put a device back to unprovisioned.
    Reset {
        name: String,
        drop_credentials: bool,
        reply: oneshot::Sender<Result<Option<DeviceRecord>, ProvisionError>>,
    },
    /// Answered once everything sent before it is committed.
    Barrier { reply: oneshot::Sender<()> },
    /// Finish the current batch and stop.
    Shutdown,
}

/// How the requested credentials id is to be checked.
pub(crate) enum ClaimInput {
    /// No credentials requested.
    NotRequested,
    /// This shard arbitrates the id: check it here, within the batch.
    Local(String),
    /// Another shard arbitrated it and holds a reservation while this message is in flight.
    Remote(Claim),
}

/// One import row on its way to its owner shard, with its claim.
pub(crate) struct ImportItem {
    pub(crate) row: ImportRow,
    pub(crate) claim: ClaimInput,
    /// Released after the owner's batch is committed.
    pub(crate) reservation: Option<Reservation>,
}

/// A release of a reservation, sent on the arbiter's unbounded release channel.
#[derive(Debug)]
pub(crate) struct Release {
    credentials_id: String,
    ticket: u64,
}

/// A claim on a credentials id at its arbiter shard. Dropping it releases the claim, whatever
/// path drops it (reply received, message dropped, caller cancelled).
#[derive(Debug)]
pub(crate) struct Reservation {
    releases: mpsc::UnboundedSender<Release>,
    credentials_id: String,
    ticket: u64,
}

impl Reservation {
    pub(crate) fn new(
        releases: mpsc::UnboundedSender<Release>,
        credentials_id: String,
        ticket: u64,
    ) -> Reservation {
        Reservation {
            releases,
            credentials_id,
            ticket,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // If the arbiter is gone the reservation is gone with it.
        let _ = self.releases.send(Release {
            credentials_id: std::mem::take(&mut self.credentials_id),
            ticket: self.ticket,
        });
    }
}

/// Tuning of one shard.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardLimits {
    pub(crate) max_batch: usize,
}

/// The shard's state; lives on its own thread.
pub(crate) struct Shard {
    id: ShardId,
    router: Router,
    store: Arc<Store>,
    profiles: Arc<ProfileRegistry>,
    mailbox: mpsc::Receiver<ShardMsg>,
    releases: mpsc::UnboundedReceiver<Release>,
    limits: ShardLimits,
    /// Credentials ids reserved for devices on other shards: id → (device, tickets).
    reservations: HashMap<String, (String, Vec<u64>)>,
}

/// Writes staged in the current batch, read before the store so that later messages of the
/// same batch see earlier ones. `run` keeps one from batch to batch (emptied), so that its maps
/// do not allocate and grow again for every batch, and hashed with foldhash (seeded per
/// process): hashing and regrowing fresh SipHash maps was about 2% of a request's instructions.
/// The keys come from clients, but a map never holds more than one batch.
#[derive(Default)]
struct Overlay {
    devices: FoldHashMap<String, Option<DeviceRecord>>,
    credentials: FoldHashMap<String, Option<String>>,
}

impl Overlay {
    /// Empties the overlay for the next batch; maps grown past `keep` entries (by a large
    /// import) give their memory back.
    fn reset(&mut self, keep: usize) {
        clear_keeping(&mut self.devices, keep);
        clear_keeping(&mut self.credentials, keep);
    }
}

fn clear_keeping<V>(map: &mut FoldHashMap<String, V>, keep: usize) {
    if map.capacity() > keep {
        *map = FoldHashMap::default();
    } else {
        map.clear();
    }
}

enum Pending {
    Provision(ProvisionReply, Result<Credentials, ProvisionError>),
    Get(
        oneshot::Sender<Result<Option<DeviceRecord>, ProvisionError>>,
        Result<Option<DeviceRecord>, ProvisionError>,
    ),
    Delete(
        oneshot::Sender<Result<bool, ProvisionError>>,
        Result<bool, ProvisionError>,
    ),
    Reset(
        oneshot::Sender<Result<Option<DeviceRecord>, ProvisionError>>,
        Result<Option<DeviceRecord>, ProvisionError>,
    ),
    Import(oneshot::Sender<Vec<RowOutcome>>, Vec<RowOutcome>),
    Barrier(oneshot::Sender<()>),
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ShardId,
        router: Router,
        store: Arc<Store>,
        profiles: Arc<ProfileRegistry>,
        mailbox: mpsc::Receiver<ShardMsg>,
        releases: mpsc::UnboundedReceiver<Release>,
        limits: ShardLimits,
    ) -> Shard {
        Shard {
            id,
            router,
            store,
            profiles,
            mailbox,
            releases,
            limits,
            reservations: HashMap::new(),
        }
    }

    /// The mailbox loop; returns when told to shut down or when every sender is gone.
    pub(crate) fn run(mut self) {
        let shard_label = self.id.0.to_string();
        let mut batch = Vec::with_capacity(self.limits.max_batch);
        let mut overlay = Overlay::default();
        loop {
            self.apply_releases();
            let Some(first) = self.mailbox.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < self.limits.max_batch {
                match self.mailbox.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            m::shard_batch(&shard_label, batch.len(), self.mailbox.len());
            // Releases that arrived meanwhile make ids free before this batch checks them.
            self.apply_releases();
            let stop = self.process(&mut batch, &mut overlay);
            if stop {
                break;
            }
        }
        self.apply_releases();
        tracing::debug!(shard = self.id.0, "shard stopped");
    }

    fn apply_releases(&mut self) {
        while let Ok(release) = self.releases.try_recv() {
            self.release(&release.credentials_id, release.ticket);
        }
    }

    fn release(&mut self, credentials_id: &str, ticket: u64) {
        if let Some((_, tickets)) = self.reservations.get_mut(credentials_id) {
            tickets.retain(|t| *t != ticket);
            if tickets.is_empty() {
                self.reservations.remove(credentials_id);
            }
        }
    }

    /// Handles one drained batch, staging into `overlay` (empty on entry, emptied on return);
    /// returns whether to stop.
    fn process(&mut self, batch: &mut Vec<ShardMsg>, overlay: &mut Overlay) -> bool {
        let mut writes = self.store.batch();
        let mut pending = Vec::with_capacity(batch.len());
        let mut held_reservations = Vec::new();
        let mut stop = false;
        for msg in batch.drain(..) {
            match msg {
                ShardMsg::Provision {
                    request,
                    name,
                    claim,
                    authenticated,
                    reservation,
                    reply,
                } => {
                    // The caller is gone (client disconnected, future dropped): nobody can be
                    // told the outcome, so create nothing. Under REJECT a device nobody was told
                    // about could never get its credentials.
                    if reply.is_closed() {
                        continue;
                    }
                    let result = self.provision(
                        &request,
                        &name,
                        claim,
                        &authenticated,
                        overlay,
                        &mut writes,
                    );
                    pending.push(Pending::Provision(reply, result));
                    held_reservations.extend(reservation);
                }
                ShardMsg::Reserve {
                    credentials_id,
                    device,
                    ticket,
                    reply,
                } => self.reserve(credentials_id, device, ticket, reply, overlay),
                ShardMsg::ReserveMany { items, reply } => self.reserve_many(items, reply, overlay),
                ShardMsg::Import { rows, mode, reply } => {
                    let mut outcomes = Vec::with_capacity(rows.len());
                    for item in rows {
                        let outcome =
                            self.import_row(&item.row, item.claim, mode, overlay, &mut writes);
                        outcomes.push(outcome);
                        held_reservations.extend(item.reservation);
                    }
                    pending.push(Pending::Import(reply, outcomes));
                }
                ShardMsg::Get { name, reply } => {
                    let result = self.read_device(&name, overlay).map_err(storage_failure);
                    pending.push(Pending::Get(reply, result));
                }
                ShardMsg::Delete {
                    name,
                    profile,
                    reply,
                } => {
                    let result = self.delete(&name, profile.as_deref(), overlay, &mut writes);
                    pending.push(Pending::Delete(reply, result));
                }
                ShardMsg::Reset {
                    name,
                    drop_credentials,
                    reply,
                } => {
                    let result = self.reset(&name, drop_credentials, overlay, &mut writes);
                    pending.push(Pending::Reset(reply, result));
                }
                ShardMsg::Barrier { reply } => pending.push(Pending::Barrier(reply)),
                ShardMsg::Shutdown => stop = true,
            }
        }
        let started = Instant::now();
        let committed = self.store.commit(writes);
        m::store_sync(started.elapsed());
        let failed = match committed {
            Ok(()) => false,
            Err(error) => {
                tracing::error!(shard = self.id.0, %error, "batch commit failed; answering its requests with FAILURE");
                true
            }
        };
        for item in pending {
            answer(item, failed);
        }
        // Only now, with the batch durable, may remote claims be released.
        drop(held_reservations);
        overlay.reset(2 * self.limits.max_batch);
        stop
    }

    fn provision(
        &mut self,
        request: &Request,
        name: &DeviceName,
        claim: ClaimInput,
        authenticated: &Arc<ProfileRecord>,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) -> Result<Credentials, ProvisionError> {
        // The profile is read at decision time, so a deleted or changed profile is never used
        // once its change has been acknowledged. A change replaces the cached record, so the
        // very record checked before the hop needs no second secret comparison.
        let profile = self.profiles.by_key(&request.provision_key);
        match &profile {
            Some(current) if Arc::ptr_eq(current, authenticated) => {}
            _ => authenticate(request, profile.as_deref())?,
        }
        let existing = self
            .read_device(name.as_str(), overlay)
            .map_err(storage_failure)?;
        let claim = match claim {
            ClaimInput::NotRequested => Claim::NotRequested,
            ClaimInput::Remote(claim) => claim,
            ClaimInput::Local(id) => self
                .local_claim(&id, name.as_str(), overlay)
                .map_err(storage_failure)?,
        };
        let facts = Facts {
            name,
            profile: profile.as_deref(),
            existing: existing.as_ref(),
            claim,
            now_ms: now_ms(),
        };
        let mut token_error = None;
        let decision = decide(request, &facts, &mut || {
            self.fresh_token(name.as_str(), overlay)
                .unwrap_or_else(|error| {
                    token_error = Some(error);
                    String::new()
                })
        });
        if let Some(error) = token_error {
            return Err(storage_failure(error));
        }
        if let Some(write) = decision.write {
            self.stage(write, existing.as_ref(), overlay, writes);
        }
        decision.outcome
    }

    /// A generated token that routes to this shard and is free, so its claim is local.
    fn fresh_token(&self, device: &str, overlay: &Overlay) -> Result<String, StoreError> {
        loop {
            let token = generate_alphanumeric();
            if self.router.shard_for(&token) == self.id
                && self.local_claim(&token, device, overlay)? == Claim::Free
            {
                return Ok(token);
            }
        }
    }

    /// Whether `credentials_id` is free for `device`: not reserved, staged or stored for another.
    fn local_claim(
        &self,
        credentials_id: &str,
        device: &str,
        overlay: &Overlay,
    ) -> Result<Claim, StoreError> {
        if let Some((owner, _)) = self.reservations.get(credentials_id)
            && owner != device
        {
            return Ok(Claim::Taken);
        }
        let owner = match overlay.credentials.get(credentials_id) {
            Some(staged) => staged.clone(),
            None => self.store.credentials_owner(credentials_id)?,
        };
        Ok(match owner {
            Some(owner) if owner != device => Claim::Taken,
            _ => Claim::Free,
        })
    }

    fn reserve(
        &mut self,
        credentials_id: String,
        device: String,
        ticket: u64,
        reply: oneshot::Sender<Claim>,
        overlay: &Overlay,
    ) {
        if reply.is_closed() {
            return;
        }
        let claim = self.try_reserve(&credentials_id, &device, ticket, overlay);
        // A requester that went away never gets to release: undo at once.
        if reply.send(claim).is_err() && claim == Claim::Free {
            self.release(&credentials_id, ticket);
        }
    }

    /// Reserves `credentials_id` for `device` under `ticket` if it is free for it; a failed
    /// lookup refuses the claim rather than risk a duplicate.
    fn try_reserve(
        &mut self,
        credentials_id: &str,
        device: &str,
        ticket: u64,
        overlay: &Overlay,
    ) -> Claim {
        let claim = match self.local_claim(credentials_id, device, overlay) {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(shard = self.id.0, %error, "credentials lookup failed; refusing the claim");
                Claim::Taken
            }
        };
        if claim == Claim::Free {
            self.reservations
                .entry(credentials_id.to_string())
                .or_insert_with(|| (device.to_string(), Vec::new()))
                .1
                .push(ticket);
        }
        claim
    }

    fn reserve_many(
        &mut self,
        items: Vec<(String, String, u64)>,
        reply: oneshot::Sender<Vec<Claim>>,
        overlay: &Overlay,
    ) {
        if reply.is_closed() {
            return;
        }
        let mut claims = Vec::with_capacity(items.len());
        for (credentials_id, device, ticket) in &items {
            claims.push(self.try_reserve(credentials_id, device, *ticket, overlay));
        }
        if let Err(claims) = reply.send(claims) {
            for ((credentials_id, _, ticket), claim) in items.iter().zip(claims) {
                if claim == Claim::Free {
                    self.release(credentials_id, *ticket);
                }
            }
        }
    }

    fn import_row(
        &self,
        row: &ImportRow,
        claim: ClaimInput,
        mode: ImportMode,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) -> RowOutcome {
        let Some(profile) = self.profiles.by_name(&row.profile) else {
            return RowOutcome::Failed(format!("profile {:?} does not exist", row.profile));
        };
        let default_type = profile.device_type.as_deref().unwrap_or(&profile.name);
        let existing = match self.read_device(&row.name, overlay) {
            Ok(existing) => existing,
            Err(error) => {
                tracing::error!(%error, "store read failed during import");
                return RowOutcome::Failed("storage error".into());
            }
        };
        let claim = match claim {
            ClaimInput::NotRequested => Claim::NotRequested,
            ClaimInput::Remote(claim) => claim,
            ClaimInput::Local(id) => match self.local_claim(&id, &row.name, overlay) {
                Ok(claim) => claim,
                Err(error) => {
                    tracing::error!(%error, "store read failed during import");
                    return RowOutcome::Failed("storage error".into());
                }
            },
        };
        let (outcome, write) =
            decide_import(row, default_type, existing.as_ref(), claim, mode, now_ms());
        if let Some(write) = write {
            self.stage_import(write, existing.as_ref(), overlay, writes);
        }
        outcome
    }

    fn stage_import(
        &self,
        write: ImportWrite,
        previous: Option<&DeviceRecord>,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) {
        let name = write.record.name.as_str();
        if let Some(old) = write.released_id {
            let owner = match overlay.credentials.get(&old) {
                Some(staged) => staged.clone(),
                None => self.store.credentials_owner(&old).ok().flatten(),
            };
            if owner.as_deref() == Some(name) {
                self.store.stage_credentials_delete(writes, &old);
                overlay.credentials.insert(old, None);
            }
        }
        self.stage(
            DeviceWrite {
                record: write.record,
                claimed_id: write.claimed_id,
            },
            previous,
            overlay,
            writes,
        );
    }

    fn read_device(
        &self,
        name: &str,
        overlay: &Overlay,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        match overlay.devices.get(name) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.device(name),
        }
    }

    /// Stages a device write; `previous` is the record it replaces, as read in this batch.
    fn stage(
        &self,
        write: DeviceWrite,
        previous: Option<&DeviceRecord>,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) {
        let name = write.record.name.clone();
        if let Some(id) = write.claimed_id {
            self.store.stage_credentials(writes, &id, &name);
            overlay.credentials.insert(id, Some(name.clone()));
        }
        self.store.stage_device(writes, &write.record, previous);
        overlay.devices.insert(name, Some(write.record));
    }

    fn delete(
        &self,
        name: &str,
        profile: Option<&str>,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) -> Result<bool, ProvisionError> {
        let Some(device) = self.read_device(name, overlay).map_err(storage_failure)? else {
            return Ok(false);
        };
        if profile.is_some_and(|p| p != device.profile) {
            return Ok(false);
        }
        self.unclaim(&device, overlay, writes)?;
        self.store.stage_device_delete(writes, &device);
        overlay.devices.insert(name.to_string(), None);
        Ok(true)
    }

    fn reset(
        &self,
        name: &str,
        drop_credentials: bool,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) -> Result<Option<DeviceRecord>, ProvisionError> {
        let Some(before) = self.read_device(name, overlay).map_err(storage_failure)? else {
            return Ok(None);
        };
        let mut device = before.clone();
        if drop_credentials {
            self.unclaim(&device, overlay, writes)?;
            device.credentials = None;
        }
        device.provisioned = false;
        device.provisioned_at_ms = None;
        device.provisioned_via = None;
        self.store.stage_device(writes, &device, Some(&before));
        overlay
            .devices
            .insert(name.to_string(), Some(device.clone()));
        Ok(Some(device))
    }

    /// Stages the removal of the device's credentials index entry, if it still points at it.
    /// The index entry may live on any shard's key space: removing an entry that points at a
    /// device this shard owns cannot race with a claim, because claims see the entry until the
    /// removal is committed and refuse.
    fn unclaim(
        &self,
        device: &DeviceRecord,
        overlay: &mut Overlay,
        writes: &mut StoreBatch,
    ) -> Result<(), ProvisionError> {
        if let Some(credentials) = &device.credentials {
            let id = credentials_id(credentials);
            let owner = match overlay.credentials.get(&id) {
                Some(staged) => staged.clone(),
                None => self.store.credentials_owner(&id).map_err(storage_failure)?,
            };
            if owner.as_deref() == Some(device.name.as_str()) {
                self.store.stage_credentials_delete(writes, &id);
                overlay.credentials.insert(id, None);
            }
        }
        Ok(())
    }
}

fn answer(item: Pending, failed: bool) {
    // A receiver that is gone (client disconnected) is not an error: the work is durable.
    match item {
        Pending::Provision(reply, result) => send_unless_failed(reply, result, failed),
        Pending::Get(reply, result) => send_unless_failed(reply, result, failed),
        Pending::Delete(reply, result) => send_unless_failed(reply, result, failed),
        Pending::Reset(reply, result) => send_unless_failed(reply, result, failed),
        Pending::Import(reply, outcomes) => {
            let outcomes = if failed {
                outcomes
                    .into_iter()
                    .map(|_| RowOutcome::Failed("storage error; the row was not written".into()))
                    .collect()
            } else {
                outcomes
            };
            let _ = reply.send(outcomes);
        }
        Pending::Barrier(reply) => {
            let _ = reply.send(());
        }
    }
}

/// Sends the result, or a storage failure when the batch holding it did not commit.
fn send_unless_failed<T>(
    reply: oneshot::Sender<Result<T, ProvisionError>>,
    result: Result<T, ProvisionError>,
    failed: bool,
) {
    let _ = reply.send(if failed {
        Err(ProvisionError::Storage)
    } else {
        result
    });
}

fn storage_failure(error: StoreError) -> ProvisionError {
    tracing::error!(%error, "store read failed");
    ProvisionError::Storage
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
