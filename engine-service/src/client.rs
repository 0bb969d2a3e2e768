//! The protocol "append a command, wait for its answer", as a client of one shard: what the
//! API (and anything else that submits commands) uses to reach the engine.
//!
//! - A writer thread appends the commands of concurrent callers in one batch (group commit),
//!   stamping each with the wall-clock time it is accepted: the only time the engine ever
//!   sees. It registers each caller's offset while it still holds the pending table's lock,
//!   so the follower can never see an answer before its waiter exists.
//! - The same writer is the market's clock: when it has appended nothing for
//!   [`ClientConfig::tick_every`], it appends a `Command::Tick` stamped with the wall clock,
//!   so deadlines (GTT expiry, lease terms, heartbeat timeouts, charge periods) take effect
//!   within one interval with no traffic. This is the one place that appends ticks; extra
//!   clients of the same shard (API replicas) run with `tick_every: None`, since ticks from
//!   clocks that disagree would be refused as going backwards.
//! - A follower thread reads the event partition. For every command an event answers it
//!   first applies that command (and all before it) to a **replica** engine with the
//!   runner's own [`crate::answer`]: the engine is deterministic, so the replica is the
//!   engine's state as of the events read so far, and its answer says how many records the
//!   command's answer has. Once that many have arrived, the answer is complete and durable,
//!   and the waiter gets it. The replica also serves live depth, balances and explanations;
//!   since it applies a command before the command's answer is handed out, a caller reads
//!   its own writes from it.
//! - Every event record read is broadcast to the market-wide subscribers, and handed to the
//!   subscribers of the accounts it names ([`EngineClient::subscribe_account`]): with many
//!   traders subscribed, waking every subscription for every record cost more CPU than the
//!   orders themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use contract::codec::{self, CommandRecord, EventBody, EventRecord, SCHEMA};
use contract::{AccountId, Command, Event, Timestamp};
use eventlog::{Log, LogConfig, NewRecord};
use matching_engine::Engine;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{error, info, warn};

use crate::{answer, Topics};

/// Why a command got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The log cannot be reached, or the client stopped: the command may not be in the log.
    #[error("event log: {0}")]
    Unavailable(String),
    /// The command is in the log, but its answer did not arrive in time; the engine will
    /// still apply it.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

type Answer = Result<Vec<EventBody>, ClientError>;

struct Pending {
    tx: oneshot::Sender<Answer>,
    /// The replica's answer, once the follower has applied the command.
    answer: Option<Vec<EventBody>>,
    /// Records of the answer not read from the event log yet.
    remaining: usize,
}

type PendingTable = Arc<Mutex<HashMap<u64, Pending>>>;

struct Submission {
    record: Vec<u8>,
    kind: &'static str,
    tx: oneshot::Sender<Answer>,
}

/// How the client reaches the log.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub log_url: String,
    pub log: LogConfig,
    pub topics: Topics,
    pub shard: u32,
    pub shards: u32,
    /// The longest a caller waits for the engine's answer.
    pub answer_timeout: Duration,
    /// Append a `Tick` after this long without appending anything
    /// ([`ClientConfig::DEFAULT_TICK_EVERY`]); `None` (or zero) appends none, for every
    /// client of a shard but one.
    pub tick_every: Option<Duration>,
}

impl ClientConfig {
    /// A second: every deadline takes effect within a second of its time.
    pub const DEFAULT_TICK_EVERY: Duration = Duration::from_secs(1);
}

/// The subscribers of each account's records.
type AccountFeeds =
    Arc<Mutex<HashMap<AccountId, Vec<tokio::sync::mpsc::Sender<Arc<EventRecord>>>>>>;

/// Records an account subscription may hold unread before it loses records, as a broadcast
/// subscriber would.
const ACCOUNT_FEED_CAPACITY: usize = 65_536;

/// The accounts an event concerns: the order's owner, a lease's buyer and provider, the
/// account whose funds moved. Settlement batches and market events name none.
fn accounts(event: &Event) -> [Option<AccountId>; 2] {
    match event {
        Event::OrderAccepted { order, .. } => [Some(order.account), None],
        Event::LeaseCreated {
            buyer, provider, ..
        }
        | Event::LeaseEnded {
            buyer, provider, ..
        }
        | Event::LeaseAccrued {
            buyer, provider, ..
        }
        | Event::LeaseClosed {
            buyer, provider, ..
        }
        | Event::BondSlashed {
            buyer, provider, ..
        } => [Some(*buyer), (provider != buyer).then_some(*provider)],
        Event::OrderRebid { buyer, .. } | Event::RebidRefused { buyer, .. } => [Some(*buyer), None],
        Event::PaymentHeld {
            buyer, provider, ..
        } => [Some(*buyer), Some(*provider)],
        Event::NodeChecked {
            checker, provider, ..
        } => [Some(*checker), Some(*provider)],
        Event::OrderAmended { account, .. }
        | Event::OrderCancelled { account, .. }
        | Event::Deposited { account, .. }
        | Event::Withdrawn { account, .. }
        | Event::PayoutAddressSet { account, .. }
        | Event::WithdrawalRequested { account, .. }
        | Event::ChainDeposited { account, .. }
        | Event::StorageCharged { account, .. } => [Some(*account), None],
        Event::ReputationSet { provider, .. }
        | Event::LeaseStarted { provider, .. }
        | Event::NodeHeartbeat { provider, .. }
        | Event::NodeReported { provider, .. }
        | Event::NodeSilent { provider, .. }
        | Event::BondPosted { provider, .. }
        | Event::BondUnbonding { provider, .. }
        | Event::BondReleased { provider, .. } => [Some(*provider), None],
        Event::MarketCreated { .. }
        | Event::MarketConfigured { .. }
        | Event::CheckerAppointed { .. }
        | Event::SettlementOpened { .. }
        | Event::SettlementConfirmed { .. }
        | Event::SettlementFailed { .. } => [None, None],
    }
}

/// Hands `record` to the subscribers of the accounts it names, without waiting: one too slow
/// to keep [`ACCOUNT_FEED_CAPACITY`] records loses this one (logged); one that went away is
/// dropped.
fn deliver(feeds: &AccountFeeds, record: &Arc<EventRecord>) {
    let EventBody::Event(event) = &record.body else {
        return;
    };
    let mut feeds = feeds.lock().expect("feeds lock");
    if feeds.is_empty() {
        return;
    }
    for account in accounts(event).into_iter().flatten() {
        let Some(subscribers) = feeds.get_mut(&account) else {
            continue;
        };
        subscribers.retain(|tx| match tx.try_send(record.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                warn!(
                    account = account.0,
                    seq = record.seq,
                    "an account subscription fell behind and missed a record"
                );
                true
            }
            Err(TrySendError::Closed(_)) => false,
        });
        if subscribers.is_empty() {
            feeds.remove(&account);
        }
    }
}

/// Commands in, answers out, and the replica engine.
pub struct EngineClient {
    submit: Mutex<mpsc::Sender<Submission>>,
    replica: Arc<RwLock<Engine>>,
    events: broadcast::Sender<Arc<EventRecord>>,
    accounts: AccountFeeds,
    progress: watch::Receiver<u64>,
    /// Event records read so far (the next event offset).
    events_read: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    /// A reader of the event partition for earlier answers ([`EngineClient::answer_at`]).
    history: Arc<Mutex<Box<dyn Log>>>,
    topics: Topics,
    shard: u32,
    answer_timeout: Duration,
}

impl std::fmt::Debug for EngineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineClient")
            .field("shard", &self.shard)
            .field("events_read", &self.events_read.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unavailable(e: impl std::fmt::Display) -> ClientError {
    ClientError::Unavailable(e.to_string())
}

impl EngineClient {
    /// Opens four log handles (writer, event reader, command reader, history reader),
    /// creates the topics if missing, catches the replica up with the events already in the
    /// log, and starts the writer and follower threads.
    pub fn start(config: ClientConfig) -> Result<EngineClient, ClientError> {
        let open = || eventlog::open(&config.log_url, &config.log).map_err(unavailable);
        let mut writer = open()?;
        writer
            .create_topic(&config.topics.commands, config.shards)
            .map_err(unavailable)?;
        writer
            .create_topic(&config.topics.events, config.shards)
            .map_err(unavailable)?;
        let mut follower = Follower {
            events_log: open()?,
            commands_log: open()?,
            topics: config.topics.clone(),
            shard: config.shard,
            replica: Arc::new(RwLock::new(Engine::new())),
            next_command: 0,
            next_event: 0,
            pending: PendingTable::default(),
            events: broadcast::channel(65_536).0,
            accounts: AccountFeeds::default(),
            progress: watch::channel(0).0,
            events_read: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        // Catch up to the answers already written, so depth is current from the start.
        let end = follower
            .events_log
            .end_offset(&config.topics.events, config.shard)
            .map_err(unavailable)?;
        while follower.next_event < end {
            follower
                .step()
                .map_err(|e| unavailable(format!("catching up: {e}")))?;
        }
        info!(
            events = end,
            commands = follower.next_command,
            "engine client: replica caught up"
        );
        let (tx, rx) = mpsc::channel::<Submission>();
        let client = EngineClient {
            submit: Mutex::new(tx),
            replica: follower.replica.clone(),
            events: follower.events.clone(),
            accounts: follower.accounts.clone(),
            progress: follower.progress.subscribe(),
            events_read: follower.events_read.clone(),
            healthy: Arc::new(AtomicBool::new(true)),
            stop: follower.stop.clone(),
            threads: Mutex::new(Vec::new()),
            history: Arc::new(Mutex::new(open()?)),
            topics: config.topics.clone(),
            shard: config.shard,
            answer_timeout: config.answer_timeout,
        };
        let writer = Writer {
            log: writer,
            topics: config.topics.clone(),
            shard: config.shard,
            pending: follower.pending.clone(),
            healthy: client.healthy.clone(),
            tick_every: config.tick_every.filter(|every| !every.is_zero()),
        };
        let spawn_error = |e: std::io::Error| unavailable(format!("spawn: {e}"));
        let writer_thread = thread::Builder::new()
            .name("api-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(spawn_error)?;
        let healthy = client.healthy.clone();
        let follower_thread = thread::Builder::new()
            .name("api-follower".into())
            .spawn(move || {
                while !follower.stop.load(Ordering::Relaxed) {
                    if let Err(e) = follower.step() {
                        error!(error = %e, "engine client follower stopped");
                        healthy.store(false, Ordering::Relaxed);
                        follower.fail_pending(&e);
                        return;
                    }
                }
            })
            .map_err(spawn_error)?;
        client
            .threads
            .lock()
            .expect("threads lock")
            .extend([writer_thread, follower_thread]);
        Ok(client)
    }

    /// Sends `command` to the engine and waits for its answer: the events it caused, or its
    /// rejection (as `Ok`: a rejection is an answer).
    pub async fn submit(&self, command: Command) -> Answer {
        if !self.healthy.load(Ordering::Relaxed) {
            return Err(unavailable("the event log connection failed"));
        }
        let kind = command.kind();
        let record = codec::encode(&CommandRecord {
            at: Timestamp(now_ms()),
            command,
        });
        let (tx, rx) = oneshot::channel();
        self.submit
            .lock()
            .expect("submit lock")
            .send(Submission { record, kind, tx })
            .map_err(|_| unavailable("the engine client is shutting down"))?;
        match tokio::time::timeout(self.answer_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(unavailable("the engine client stopped")),
            Err(_) => Err(ClientError::Timeout(self.answer_timeout)),
        }
    }

    /// The records of an earlier answer from the one at `seq` on: every record after it
    /// that answers the same command. Records of one answer are contiguous, and a later
    /// command's answer always follows, so the read ends at the first record of another
    /// command (waiting for it, within the answer timeout, if the log has not got that far).
    pub async fn answer_at(&self, seq: u64) -> Result<Vec<EventRecord>, ClientError> {
        let (history, topics, shard) = (self.history.clone(), self.topics.clone(), self.shard);
        let deadline = std::time::Instant::now() + self.answer_timeout;
        tokio::task::spawn_blocking(move || {
            let mut log = history.lock().expect("history lock");
            let mut records: Vec<EventRecord> = Vec::new();
            let mut next = seq;
            loop {
                let remaining = deadline.saturating_duration_since(std::time::Instant::now());
                if remaining.is_zero() {
                    return Err(ClientError::Timeout(Duration::ZERO));
                }
                let batch = log
                    .read(
                        &topics.events,
                        shard,
                        next,
                        256,
                        remaining.min(Duration::from_millis(200)),
                    )
                    .map_err(unavailable)?;
                for raw in batch {
                    let record: EventRecord = codec::decode(raw.schema, &raw.payload)
                        .map_err(|e| unavailable(format!("event {}: {e}", raw.offset)))?;
                    if records
                        .first()
                        .is_some_and(|first| first.command_offset != record.command_offset)
                    {
                        return Ok(records);
                    }
                    records.push(record);
                    next = raw.offset + 1;
                }
            }
        })
        .await
        .map_err(|e| unavailable(format!("reading an earlier answer: {e}")))?
    }

    /// The replica engine, as of the events read so far.
    pub fn replica(&self) -> std::sync::RwLockReadGuard<'_, Engine> {
        self.replica.read().expect("replica lock")
    }

    /// Every event record read from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.events.subscribe()
    }

    /// The event records that name `account` (see [`accounts`]), from now on. Dropping the
    /// receiver ends the subscription.
    pub fn subscribe_account(
        &self,
        account: AccountId,
    ) -> tokio::sync::mpsc::Receiver<Arc<EventRecord>> {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCOUNT_FEED_CAPACITY);
        self.accounts
            .lock()
            .expect("feeds lock")
            .entry(account)
            .or_default()
            .push(tx);
        rx
    }

    /// Changes whenever the follower has read more events.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.clone()
    }

    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::Relaxed)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Stops the threads (the writer finishes the batch it holds).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Replacing the sender closes the writer's channel.
        *self.submit.lock().expect("submit lock") = mpsc::channel().0;
        for handle in self.threads.lock().expect("threads lock").drain(..) {
            let _ = handle.join();
        }
    }
}

/// The writer thread's side: the log it appends to and where waiters are registered.
struct Writer {
    log: Box<dyn Log>,
    topics: Topics,
    shard: u32,
    pending: PendingTable,
    healthy: Arc<AtomicBool>,
    tick_every: Option<Duration>,
}

impl Writer {
    /// Appends submissions in batches; each waiter is registered under the pending table's
    /// lock, taken before the append, so the follower (which needs the lock to deliver)
    /// cannot look for a waiter that is not there yet. When nothing was appended for
    /// `tick_every`, appends a tick instead.
    fn run(mut self, rx: &mpsc::Receiver<Submission>) {
        const MAX_BATCH: usize = 1_024;
        let mut last_append = Instant::now();
        loop {
            let first = match self.tick_every {
                None => match rx.recv() {
                    Ok(first) => first,
                    Err(_) => return,
                },
                Some(every) => {
                    let wait = every.saturating_sub(last_append.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(first) => first,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.tick();
                            last_append = Instant::now();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.append(batch);
            last_append = Instant::now();
        }
    }

    /// Appends a tick that nobody waits for; the follower applies it like any command.
    fn tick(&mut self) {
        let record = codec::encode(&CommandRecord {
            at: Timestamp(now_ms()),
            command: Command::Tick,
        });
        let tick = NewRecord {
            kind: Command::Tick.kind(),
            schema: SCHEMA,
            payload: &record,
        };
        if let Err(e) = self.log.append(&self.topics.commands, self.shard, &[tick]) {
            // The next submission's append reports the log's state to its caller.
            warn!(error = %e, "appending a clock tick failed");
        }
    }

    fn append(&mut self, batch: Vec<Submission>) {
        let records: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|s| NewRecord {
                kind: s.kind,
                schema: SCHEMA,
                payload: &s.record,
            })
            .collect();
        let mut table = self.pending.lock().expect("pending lock");
        match self.log.append(&self.topics.commands, self.shard, &records) {
            Ok(first_offset) => {
                drop(records);
                for (i, submission) in batch.into_iter().enumerate() {
                    table.insert(
                        first_offset + i as u64,
                        Pending {
                            tx: submission.tx,
                            answer: None,
                            remaining: 0,
                        },
                    );
                }
            }
            Err(e) => {
                drop(table);
                error!(error = %e, "appending commands failed");
                self.healthy.store(false, Ordering::Relaxed);
                drop(records);
                for submission in batch {
                    let _ = submission.tx.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

struct Follower {
    events_log: Box<dyn Log>,
    commands_log: Box<dyn Log>,
    topics: Topics,
    shard: u32,
    replica: Arc<RwLock<Engine>>,
    next_command: u64,
    next_event: u64,
    pending: PendingTable,
    events: broadcast::Sender<Arc<EventRecord>>,
    accounts: AccountFeeds,
    progress: watch::Sender<u64>,
    events_read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    /// Reads one batch of events, applying the commands they answer to the replica first.
    fn step(&mut self) -> Result<(), String> {
        let records = self
            .events_log
            .read(
                &self.topics.events,
                self.shard,
                self.next_event,
                4_096,
                Duration::from_millis(50),
            )
            .map_err(|e| e.to_string())?;
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            let event: EventRecord = codec::decode(record.schema, &record.payload)
                .map_err(|e| format!("event {}: {e}", record.offset))?;
            while self.next_command <= event.command_offset {
                self.apply_commands(event.command_offset)?;
            }
            let mut table = self.pending.lock().expect("pending lock");
            if let Some(waiting) = table.get_mut(&event.command_offset) {
                let index = waiting
                    .answer
                    .as_ref()
                    .map_or(0, |a| a.len() - waiting.remaining);
                let expected = waiting.answer.as_ref().and_then(|a| a.get(index));
                if expected != Some(&event.body) {
                    // The replica runs the same engine over the same commands; a difference
                    // means another engine version wrote the log. The log is the truth.
                    warn!(
                        offset = event.command_offset,
                        "replica answer differs from the logged one"
                    );
                }
                waiting.remaining = waiting.remaining.saturating_sub(1);
                if waiting.remaining == 0 {
                    let done = table
                        .remove(&event.command_offset)
                        .expect("the entry exists");
                    let _ = done.tx.send(Ok(done.answer.unwrap_or_default()));
                }
            }
            drop(table);
            self.next_event = record.offset + 1;
            let record = Arc::new(event);
            deliver(&self.accounts, &record);
            // Nobody listening is fine.
            let _ = self.events.send(record);
        }
        self.events_read.store(self.next_event, Ordering::Relaxed);
        self.progress.send_replace(self.next_event);
        Ok(())
    }

    /// Applies commands to the replica up to and including `through`.
    fn apply_commands(&mut self, through: u64) -> Result<(), String> {
        let wanted = (through + 1 - self.next_command).min(4_096) as usize;
        let commands = self
            .commands_log
            .read(
                &self.topics.commands,
                self.shard,
                self.next_command,
                wanted,
                Duration::from_secs(1),
            )
            .map_err(|e| e.to_string())?;
        let mut engine = self.replica.write().expect("replica lock");
        let mut table = self.pending.lock().expect("pending lock");
        let (mut events, mut answer_records) = (Vec::new(), Vec::new());
        for record in commands {
            let command: CommandRecord = codec::decode(record.schema, &record.payload)
                .map_err(|e| format!("command {}: {e}", record.offset))?;
            answer_records.clear();
            // Numbered from zero: only the bodies are compared with the log.
            answer(
                &mut engine,
                record.offset,
                0,
                &command,
                &mut events,
                &mut answer_records,
            );
            if let Some(waiting) = table.get_mut(&record.offset) {
                let bodies: Vec<EventBody> = answer_records.drain(..).map(|r| r.body).collect();
                if bodies.is_empty() {
                    // Nothing will come from the event log for it (a tick that expired nothing).
                    let done = table.remove(&record.offset).expect("the entry exists");
                    let _ = done.tx.send(Ok(bodies));
                } else {
                    waiting.remaining = bodies.len();
                    waiting.answer = Some(bodies);
                }
            }
            self.next_command = record.offset + 1;
        }
        Ok(())
    }

    fn fail_pending(&mut self, reason: &str) {
        for (_, waiting) in self.pending.lock().expect("pending lock").drain() {
            let _ = waiting.tx.send(Err(unavailable(reason)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::Amount;

    fn deposit(seq: u64, account: u64) -> Arc<EventRecord> {
        Arc::new(EventRecord {
            seq,
            command_offset: seq,
            at: Timestamp(0),
            body: EventBody::Event(Event::Deposited {
                account: AccountId(account),
                amount: Amount::parse("1").unwrap(),
            }),
        })
    }

    fn feed(
        feeds: &AccountFeeds,
        account: u64,
        capacity: usize,
    ) -> tokio::sync::mpsc::Receiver<Arc<EventRecord>> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        feeds
            .lock()
            .unwrap()
            .entry(AccountId(account))
            .or_default()
            .push(tx);
        rx
    }

    #[test]
    fn a_record_reaches_the_subscribers_of_the_accounts_it_names_and_no_one_else() {
        let feeds = AccountFeeds::default();
        let (mut one, mut also_one, mut two) =
            (feed(&feeds, 1, 8), feed(&feeds, 1, 8), feed(&feeds, 2, 8));
        deliver(&feeds, &deposit(0, 1));
        assert_eq!(one.try_recv().unwrap().seq, 0);
        assert_eq!(also_one.try_recv().unwrap().seq, 0);
        assert!(two.try_recv().is_err(), "account 2 is not named");
    }

    #[test]
    fn a_full_subscriber_misses_records_and_a_gone_one_is_dropped() {
        let feeds = AccountFeeds::default();
        let mut slow = feed(&feeds, 1, 1);
        drop(feed(&feeds, 1, 8));
        deliver(&feeds, &deposit(0, 1));
        deliver(&feeds, &deposit(1, 1));
        assert_eq!(
            feeds.lock().unwrap()[&AccountId(1)].len(),
            1,
            "the closed one is gone"
        );
        assert_eq!(slow.try_recv().unwrap().seq, 0);
        assert!(
            slow.try_recv().is_err(),
            "record 1 did not fit and was missed"
        );
        deliver(&feeds, &deposit(2, 1));
        assert_eq!(
            slow.try_recv().unwrap().seq,
            2,
            "and it goes on with the next"
        );
        drop(slow);
        deliver(&feeds, &deposit(3, 1));
        assert!(
            feeds.lock().unwrap().is_empty(),
            "no subscriber left, no entry left"
        );
    }
}
