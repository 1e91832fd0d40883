//! The state database (`gateway-api.md` §5.3): one redb file under `gateway.state_dir`, the
//! root of the gateway's at-least-once guarantee. It holds the event log, the presence table,
//! the subscriptions (secrets included, hence mode 0600), each subscription's queue of messages
//! (id, exact body, retry state), the events waiting to form a batch, dead letters and a few
//! counters.
//!
//! Every operation is one synchronous write transaction, so callers run it on a blocking
//! thread (`tokio::task::spawn_blocking`). An in-memory mirror of the subscriptions and queue
//! sizes is changed only after its transaction commits, under the same lock, so memory never
//! runs ahead of the disk. redb's file lock makes a second gateway on the same directory
//! refuse to start ([`StoreError::Locked`]).
//!
//! Sequence points for crash tests (checklist 44): an event is accepted when
//! [`Store::accept`] returns `Ok` (its commit used immediate durability); a message leaves its
//! queue only in [`Store::record_attempt`] after the transport reported a 2xx.
//!
//! - [`records`]: the value types and their encodings.
//! - [`accept`]: acceptance (log, presence, queues, batches, coalescing, backlog bound).
//! - [`delivery`]: the scheduler's side: queue heads, attempt results, dead letters, replay.
//! - [`subscriptions`]: create, read, change and delete subscriptions.

pub mod accept;
pub mod delivery;
pub use delivery::{AttemptState, Decision};
pub(crate) mod queue;
pub mod records;
pub mod subscriptions;

use crate::config::GatewayConfig;
use records::{MessageMeta, Subscription, decode_with_body};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// sequence → `[accepted ms][event JSON]`.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// key → presence record JSON.
pub(crate) const PRESENCE: TableDefinition<&str, &[u8]> = TableDefinition::new("presence");
/// sub id → subscription JSON.
pub(crate) const SUBSCRIPTIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("subscriptions");
/// (sub id, queue position) → `[meta][body]`.
pub(crate) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// (sub id, sequence) → `[accepted ms][event JSON]`: events waiting to form a batch.
pub(crate) const BATCHING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("batching");
/// (sub id, dead-letter position) → `[meta][body]`.
pub(crate) const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// Counters: `next_sequence`, `next_position`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The oldest sequence the log holds, and `(sequence, event JSON)` entries.
pub type LogSlice = (Option<u64>, Vec<(u64, String)>);

/// The database file's name inside `state_dir`.
pub const FILE_NAME: &str = "gateway.redb";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state directory {0} is in use by another gateway (its database is locked); stop it or choose another gateway.state_dir"
    )]
    Locked(PathBuf),
    #[error("cannot open the state database in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("state database write failed: {0}")]
    Write(String),
    #[error("state database read failed: {0}")]
    Read(String),
    #[error("state database writes are failing (injected)")]
    Injected,
    #[error("no such subscription")]
    NoSubscription,
    #[error("no such dead letter")]
    NoDeadLetter,
    #[error("webhooks.max_subscriptions ({0}) reached")]
    Limit(usize),
    #[error("the subscription is disabled")]
    Disabled,
}

macro_rules! from_redb {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::$v(e.to_string())
            }
        }
    )*};
}
from_redb!(redb::TransactionError => Write, redb::TableError => Write, redb::StorageError => Write,
    redb::CommitError => Write);

/// The settings the store applies inside its transactions.
#[derive(Debug, Clone)]
pub struct Options {
    /// `gateway.name`, for envelopes and batch wrappers.
    pub gateway: String,
    pub max_subscriptions: usize,
    pub coalesce_threshold: u64,
    pub max_backlog: u64,
    pub dead_letter_max: u64,
    pub dead_letter_retention_ms: u64,
    pub log_retention_ms: u64,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Options {
    pub fn from_config(config: &GatewayConfig) -> Options {
        let w = &config.webhooks;
        Options {
            gateway: config.gateway.name.clone(),
            max_subscriptions: w.max_subscriptions,
            coalesce_threshold: w.coalesce_threshold as u64,
            max_backlog: w.max_backlog as u64,
            dead_letter_max: w.dead_letter_max as u64,
            dead_letter_retention_ms: ms(w.dead_letter_retention),
            log_retention_ms: ms(config.beacons.log_retention),
        }
    }
}

/// What memory keeps of one subscription.
#[derive(Debug, Clone)]
pub(crate) struct SubState {
    pub sub: Subscription,
    /// Events queued: in messages and waiting to form a batch.
    pub pending: u64,
    /// Messages queued.
    pub messages: u64,
    /// Events waiting to form a batch, and when the first of them was accepted.
    pub batching: u64,
    pub batch_opened_ms: Option<u64>,
    /// Dead letters held.
    pub dead: u64,
    /// Queue position and id of the message being attempted (not persisted).
    pub in_flight: Option<(u64, String)>,
    /// key → position of its latest queued `beacon.updated` with no entered/left behind it.
    pub coalesce: HashMap<String, u64>,
}

impl SubState {
    /// A subscription with an empty queue.
    pub fn new(sub: Subscription) -> SubState {
        SubState {
            sub,
            pending: 0,
            messages: 0,
            batching: 0,
            batch_opened_ms: None,
            dead: 0,
            in_flight: None,
            coalesce: HashMap::new(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub subs: BTreeMap<String, SubState>,
}

struct Inner {
    db: Database,
    options: Options,
    cache: Mutex<Cache>,
    writable: AtomicBool,
    fail_writes: AtomicBool,
    /// Bumped after every committed write and in-flight change, for waiters.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The state database. Cheap to clone; every clone is the same database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the database in `dir`, locked for this process. A second open of the
    /// same directory, from this or another process, fails with [`StoreError::Locked`].
    pub fn open(dir: &Path, options: Options) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        create_private_dir(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join(FILE_NAME);
        let file = open_private(&path).map_err(|e| open_err(e.to_string()))?;
        let db = match redb::Builder::new().create_file(file) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(dir.to_path_buf()));
            }
            Err(e) => return Err(open_err(e.to_string())),
        };
        let store = Store {
            inner: Arc::new(Inner {
                db,
                options,
                cache: Mutex::new(Cache::default()),
                writable: AtomicBool::new(true),
                fail_writes: AtomicBool::new(false),
                changed: tokio::sync::watch::channel(0).0,
            }),
        };
        store.create_tables().map_err(|e| open_err(e.to_string()))?;
        let cache = store.load().map_err(|e| open_err(e.to_string()))?;
        *store.cache() = cache;
        Ok(store)
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Whether the last write succeeded (`false` while storage is failing).
    pub fn writable(&self) -> bool {
        self.inner.writable.load(Ordering::Relaxed)
    }

    /// Fault injection for tests (cargo feature `test-util`): while set, every write
    /// transaction is aborted and fails, as a full disk would make it.
    #[cfg(feature = "test-util")]
    pub fn set_fail_writes(&self, fail: bool) {
        self.inner.fail_writes.store(fail, Ordering::Relaxed);
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        // A poisoned lock only means a panic elsewhere; the cache is still consistent because
        // it changes only after commits.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Begin a write transaction with the given durability.
    pub(crate) fn begin(
        &self,
        durability: redb::Durability,
    ) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db().begin_write()?;
        txn.set_durability(durability);
        Ok(txn)
    }

    /// Commit, unless writes are being failed on purpose; record whether writes work.
    pub(crate) fn commit(&self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        // Without `test-util` the fault injector cannot be set, and the check compiles away.
        let result =
            if cfg!(feature = "test-util") && self.inner.fail_writes.load(Ordering::Relaxed) {
                let _ = txn.abort();
                Err(StoreError::Injected)
            } else {
                txn.commit().map_err(StoreError::from)
            };
        self.inner.writable.store(result.is_ok(), Ordering::Relaxed);
        if result.is_ok() {
            self.touched();
        }
        result
    }

    /// Changes from now on: the value moves after every committed write (the mirror is
    /// already up to date by the time a reader gets the cache lock) and every in-flight change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    pub(crate) fn touched(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.begin(redb::Durability::Immediate)?;
        txn.open_table(EVENTS)?;
        txn.open_table(PRESENCE)?;
        txn.open_table(SUBSCRIPTIONS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(BATCHING)?;
        txn.open_table(DEAD)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// Rebuild the in-memory mirror from the tables.
    fn load(&self) -> Result<Cache, StoreError> {
        let txn = self
            .db()
            .begin_read()
            .map_err(|e| StoreError::Read(e.to_string()))?;
        let read = |e: redb::Error| StoreError::Read(e.to_string());
        let subs = txn.open_table(SUBSCRIPTIONS).map_err(|e| read(e.into()))?;
        let messages = txn.open_table(MESSAGES).map_err(|e| read(e.into()))?;
        let batching = txn.open_table(BATCHING).map_err(|e| read(e.into()))?;
        let dead = txn.open_table(DEAD).map_err(|e| read(e.into()))?;
        let mut cache = Cache::default();
        for entry in subs.iter().map_err(|e| read(e.into()))? {
            let (_, value) = entry.map_err(|e| read(e.into()))?;
            let Ok(sub) = serde_json::from_slice::<Subscription>(value.value()) else {
                tracing::warn!("skipping an unreadable subscription record");
                continue;
            };
            let id = sub.id.clone();
            let mut state = SubState::new(sub);
            let range = (id.as_str(), 0)..=(id.as_str(), u64::MAX);
            for entry in messages.range(range.clone()).map_err(|e| read(e.into()))? {
                let (k, v) = entry.map_err(|e| read(e.into()))?;
                let position = k.value().1;
                if let Some((meta, _)) = decode_with_body::<MessageMeta>(v.value()) {
                    state.messages += 1;
                    state.pending += meta.sequences.len() as u64;
                    note_coalescing(&mut state.coalesce, &meta, position);
                }
            }
            for entry in batching.range(range.clone()).map_err(|e| read(e.into()))? {
                let (_, v) = entry.map_err(|e| read(e.into()))?;
                if state.batch_opened_ms.is_none() {
                    state.batch_opened_ms = records::decode_timed(v.value()).map(|(ms, _)| ms);
                }
                state.batching += 1;
                state.pending += 1;
            }
            state.dead = dead.range(range).map_err(|e| read(e.into()))?.count() as u64;
            cache.subs.insert(id, state);
        }
        Ok(cache)
    }

    /// How many events the log holds (for tests and metrics).
    pub fn log_len(&self) -> Result<u64, StoreError> {
        let txn = self
            .db()
            .begin_read()
            .map_err(|e| StoreError::Read(e.to_string()))?;
        let t = txn
            .open_table(EVENTS)
            .map_err(|e| StoreError::Read(e.to_string()))?;
        t.len().map_err(|e| StoreError::Read(e.to_string()))
    }

    /// Events with `sequence > after`, in order, at most `limit`; and the oldest sequence the
    /// log still holds.
    pub fn log_after(&self, after: u64, limit: usize) -> Result<LogSlice, StoreError> {
        let rd = |e: String| StoreError::Read(e);
        let txn = self.db().begin_read().map_err(|e| rd(e.to_string()))?;
        let t = txn.open_table(EVENTS).map_err(|e| rd(e.to_string()))?;
        let oldest = t
            .first()
            .map_err(|e| rd(e.to_string()))?
            .map(|(k, _)| k.value());
        let mut out = Vec::new();
        for entry in t
            .range(after.saturating_add(1)..)
            .map_err(|e| rd(e.to_string()))?
            .take(limit)
        {
            let (k, v) = entry.map_err(|e| rd(e.to_string()))?;
            if let Some((_, json)) = records::decode_timed(v.value()) {
                out.push((k.value(), String::from_utf8_lossy(json).into_owned()));
            }
        }
        Ok((oldest, out))
    }

    /// The persisted presence table.
    pub fn presence(&self) -> Result<Vec<records::PresenceRecord>, StoreError> {
        let rd = |e: String| StoreError::Read(e);
        let txn = self.db().begin_read().map_err(|e| rd(e.to_string()))?;
        let t = txn.open_table(PRESENCE).map_err(|e| rd(e.to_string()))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| rd(e.to_string()))? {
            let (_, v) = entry.map_err(|e| rd(e.to_string()))?;
            match serde_json::from_slice(v.value()) {
                Ok(record) => out.push(record),
                Err(_) => tracing::warn!("skipping an unreadable presence record"),
            }
        }
        Ok(out)
    }
}

/// Keep the coalescing index current for a message just queued at `position`.
pub(crate) fn note_coalescing(index: &mut HashMap<String, u64>, meta: &MessageMeta, position: u64) {
    if let (Some(t), Some(key)) = (&meta.event_type, &meta.key) {
        if t == "beacon.updated" {
            index.insert(key.clone(), position);
        } else {
            index.remove(key);
        }
    }
}

/// Next value of a counter in `META`.
pub(crate) fn next_counter(
    meta: &mut redb::Table<'_, &'static str, u64>,
    name: &str,
) -> Result<u64, StoreError> {
    let current = meta.get(name)?.map(|v| v.value()).unwrap_or(1);
    meta.insert(name, current + 1)?;
    Ok(current)
}

/// Create the state directory (0700 when this creates it; an existing one is left alone).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Create (or open) the database file with mode 0600: it holds secrets.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// Runs a store operation on a blocking thread, as every async caller must (redb commits
/// fsync).
pub async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Write(e.to_string())))
}
