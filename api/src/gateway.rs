//! The API's way to the engine: commands go into the shard's command partition, answers come
//! back from its event partition.
//!
//! - A writer thread appends the commands of concurrent requests in one batch (group commit)
//!   and registers each request's offset while it still holds the pending table's lock, so
//!   the follower can never see an answer before its waiter exists.
//! - A follower thread reads the event partition. For every command an event refers to it
//!   first applies that command (and all before it) to a **replica** engine: the engine is
//!   deterministic, so the replica is the engine's state as of the events read so far. The
//!   replica says how many records the command's answer has; once that many have arrived,
//!   the answer is complete and durable, and the waiter gets it. The replica also serves the
//!   live depth and the "why has my order not matched" explanations without a round trip.
//! - Every event record read is broadcast to the market-wide subscriptions, and handed to
//!   the subscriptions of the accounts it names ([`Gateway::subscribe_account`]): with many
//!   traders subscribed, waking every subscription for every record cost more CPU than the
//!   orders themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contract::codec::{self, CommandRecord, EventBody, EventRecord, SCHEMA};
use contract::{AccountId, Command, Event, Timestamp};
use engine_service::Topics;
use eventlog::{Log, LogConfig, NewRecord};
use matching_engine::Engine;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{error, info, warn};

use crate::errors::ApiError;

type Answer = Result<Vec<EventBody>, ApiError>;

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

/// How the gateway reaches the log.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub log_url: String,
    pub log: LogConfig,
    pub topics: Topics,
    pub shard: u32,
    pub shards: u32,
    /// The longest a mutation waits for the engine's answer.
    pub answer_timeout: Duration,
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
        } => [Some(*buyer), (provider != buyer).then_some(*provider)],
        Event::OrderAmended { account, .. }
        | Event::OrderCancelled { account, .. }
        | Event::Deposited { account, .. }
        | Event::Withdrawn { account, .. }
        | Event::PayoutAddressSet { account, .. }
        | Event::WithdrawalRequested { account, .. }
        | Event::ChainDeposited { account, .. } => [Some(*account), None],
        Event::ReputationSet { provider, .. }
        | Event::LeaseStarted { provider, .. }
        | Event::NodeHeartbeat { provider, .. } => [Some(*provider), None],
        Event::MarketCreated { .. }
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
pub struct Gateway {
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
    answer_timeout: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("events_read", &self.events_read.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Gateway {
    /// Opens three log handles (writer, event reader, command reader), creates the topics if
    /// missing, catches the replica up with the events already in the log, and starts the
    /// writer and follower threads.
    pub fn start(config: GatewayConfig) -> Result<Gateway, ApiError> {
        let open = || {
            eventlog::open(&config.log_url, &config.log)
                .map_err(|e| ApiError::unavailable(format!("event log: {e}")))
        };
        let mut writer = open()?;
        let log_err = |e: eventlog::LogError| ApiError::unavailable(format!("event log: {e}"));
        writer
            .create_topic(&config.topics.commands, config.shards)
            .map_err(log_err)?;
        writer
            .create_topic(&config.topics.events, config.shards)
            .map_err(log_err)?;
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
            .map_err(log_err)?;
        while follower.next_event < end {
            follower
                .step()
                .map_err(|e| ApiError::unavailable(format!("catching up: {e}")))?;
        }
        info!(
            events = end,
            commands = follower.next_command,
            "gateway: replica caught up"
        );
        let (tx, rx) = mpsc::channel::<Submission>();
        let gateway = Gateway {
            submit: Mutex::new(tx),
            replica: follower.replica.clone(),
            events: follower.events.clone(),
            accounts: follower.accounts.clone(),
            progress: follower.progress.subscribe(),
            events_read: follower.events_read.clone(),
            healthy: Arc::new(AtomicBool::new(true)),
            stop: follower.stop.clone(),
            threads: Mutex::new(Vec::new()),
            answer_timeout: config.answer_timeout,
        };
        let pending = follower.pending.clone();
        let healthy = gateway.healthy.clone();
        let topics = config.topics.clone();
        let shard = config.shard;
        let writer_thread = thread::Builder::new()
            .name("api-writer".into())
            .spawn(move || write_loop(writer, &topics, shard, &rx, &pending, &healthy))
            .map_err(|e| ApiError::internal(format!("spawn: {e}")))?;
        let healthy = gateway.healthy.clone();
        let follower_thread = thread::Builder::new()
            .name("api-follower".into())
            .spawn(move || {
                while !follower.stop.load(Ordering::Relaxed) {
                    if let Err(e) = follower.step() {
                        error!(error = %e, "gateway follower stopped");
                        healthy.store(false, Ordering::Relaxed);
                        follower.fail_pending(&e);
                        return;
                    }
                }
            })
            .map_err(|e| ApiError::internal(format!("spawn: {e}")))?;
        gateway
            .threads
            .lock()
            .expect("threads lock")
            .extend([writer_thread, follower_thread]);
        Ok(gateway)
    }

    /// Sends `command` to the engine and waits for its answer: the events it caused, or its
    /// rejection (as `Ok`: a rejection is an answer).
    pub async fn submit(&self, command: Command) -> Answer {
        if !self.healthy.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable("the event log connection failed"));
        }
        let kind = command_kind(&command);
        let record = codec::encode(&CommandRecord {
            at: Timestamp(now_ms()),
            command,
        });
        let (tx, rx) = oneshot::channel();
        self.submit
            .lock()
            .expect("submit lock")
            .send(Submission { record, kind, tx })
            .map_err(|_| ApiError::unavailable("the gateway is shutting down"))?;
        match tokio::time::timeout(self.answer_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ApiError::unavailable("the gateway stopped")),
            Err(_) => Err(ApiError::engine_timeout(format!(
                "no answer within {} ms",
                self.answer_timeout.as_millis()
            ))),
        }
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

fn command_kind(command: &Command) -> &'static str {
    match command {
        Command::CreateMarket { .. } => "create_market",
        Command::Deposit { .. } => "deposit",
        Command::Withdraw { .. } => "withdraw",
        Command::Place(_) => "place",
        Command::Cancel { .. } => "cancel",
        Command::Amend { .. } => "amend",
        Command::EndLease { .. } => "end_lease",
        Command::SetReputation { .. } => "set_reputation",
        Command::StartLease { .. } => "start_lease",
        Command::Heartbeat { .. } => "heartbeat",
        Command::Tick => "tick",
        Command::SetPayoutAddress { .. } => "set_payout_address",
        Command::RequestWithdrawal { .. } => "request_withdrawal",
        Command::ChainDeposit { .. } => "chain_deposit",
        Command::OpenSettlement { .. } => "open_settlement",
        Command::ConfirmSettlement { .. } => "confirm_settlement",
        Command::FailSettlement { .. } => "fail_settlement",
    }
}

/// Appends submissions in batches; each waiter is registered under the pending table's
/// lock, taken before the append, so the follower (which needs the lock to deliver) cannot
/// look for a waiter that is not there yet.
fn write_loop(
    mut log: Box<dyn Log>,
    topics: &Topics,
    shard: u32,
    rx: &mpsc::Receiver<Submission>,
    pending: &PendingTable,
    healthy: &AtomicBool,
) {
    const MAX_BATCH: usize = 1_024;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let records: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|s| NewRecord {
                kind: s.kind,
                schema: SCHEMA,
                payload: &s.record,
            })
            .collect();
        let mut table = pending.lock().expect("pending lock");
        match log.append(&topics.commands, shard, &records) {
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
                healthy.store(false, Ordering::Relaxed);
                drop(records);
                for submission in batch {
                    let _ = submission
                        .tx
                        .send(Err(ApiError::unavailable(format!("event log: {e}"))));
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
        let mut events = Vec::new();
        for record in commands {
            let command: CommandRecord = codec::decode(record.schema, &record.payload)
                .map_err(|e| format!("command {}: {e}", record.offset))?;
            events.clear();
            let result = engine.apply(command.at, &command.command, &mut events);
            if let Some(waiting) = table.get_mut(&record.offset) {
                let answer: Vec<EventBody> = events
                    .drain(..)
                    .map(EventBody::Event)
                    .chain(result.err().map(EventBody::Rejected))
                    .collect();
                if answer.is_empty() {
                    // Nothing will come from the event log for it (a tick that expired nothing).
                    let done = table.remove(&record.offset).expect("the entry exists");
                    let _ = done.tx.send(Ok(answer));
                } else {
                    waiting.remaining = answer.len();
                    waiting.answer = Some(answer);
                }
            }
            self.next_command = record.offset + 1;
        }
        Ok(())
    }

    fn fail_pending(&mut self, reason: &str) {
        for (_, waiting) in self.pending.lock().expect("pending lock").drain() {
            let _ = waiting
                .tx
                .send(Err(ApiError::unavailable(format!("event log: {reason}"))));
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
