//! The Kafka backend, on librdkafka's synchronous clients.
//!
//! Appends go through an idempotent producer (`acks=all`, so a retried send never duplicates or
//! reorders a record) and wait for every delivery report. Reads go through one consumer that
//! manages offsets itself: each partition read is assigned at the requested offset and split
//! into its own queue, so partitions read alternately keep their own prefetched records and never
//! need a re-seek; a seek happens only when a read asks for another offset than the next one.
//! Nothing is committed to a consumer group: the caller owns its positions.
//!
//! Some Kafka-protocol brokers store each produced batch whole and index only its first offset;
//! tansu 0.6 with `memory://` storage does. A fetch from inside a stored batch skips that batch,
//! and the end offset they report is the last batch's first offset + 1. This backend copes
//! without giving up batching: it positions a read at a batch's first offset and drops the
//! records before the one asked for, and it learns the end offset by fetching the last batch.
//! Against Kafka itself the same steps are merely redundant.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{check_topic, Log, LogConfig, LogError, NewRecord, Record};

fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> LogError {
    let context = context.into();
    move |source| LogError::Kafka { context, source }
}

/// Collects the delivery reports of the batch being appended (the opaque of each message is
/// its index in the batch) and wakes the appender as they arrive. The producer's polling thread
/// calls `delivery`.
#[derive(Debug, Default)]
struct Deliveries {
    reports: Mutex<Vec<(usize, Result<i64, KafkaError>)>>,
    arrived: Condvar,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let report = match result {
            Ok(message) => Ok(message.offset()),
            Err((error, _)) => Err(error.clone()),
        };
        lock(&self.reports).push((index, report));
        self.arrived.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A list of reports stays consistent whatever a panicking holder was doing.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One partition this handle reads: its own queue and where it stands.
struct Reader {
    queue: PartitionQueue<DefaultConsumerContext>,
    position: Position,
}

struct Position {
    /// The offset to hand out next, or [`MUST_SEEK`].
    next: u64,
    /// After a seek, where the fetch was positioned, until a record shows that the position is
    /// at or before `next` (a batch-storing broker skips the batch holding a position inside it).
    seeking: Option<u64>,
    /// The earliest retained offset at the last seek: a search for a batch start goes no lower.
    earliest: u64,
}

/// A `next` no read asks for, so that the read after a failure seeks afresh: the queue is past
/// the failed record, and librdkafka's fetcher stops after an error.
const MUST_SEEK: u64 = u64::MAX;

/// What a fetched record means for a reader at `position`: the next record to hand out, one to
/// skip (`None`), or an error.
fn accept(
    consumer: &BaseConsumer,
    position: &mut Position,
    message: &BorrowedMessage<'_>,
    timeout: Duration,
) -> Result<Option<Record>, LogError> {
    let (topic, partition) = (message.topic(), message.partition());
    let offset = message.offset() as u64;
    let corrupt = |reason| LogError::Corrupt {
        topic: topic.to_owned(),
        partition: partition as u32,
        offset: position.next,
        reason,
    };
    if let Some(at) = position.seeking {
        if offset > position.next {
            // The broker skipped the batch that holds `next`: start further back, doubling the
            // distance each time, until a fetch starts at or before it.
            if at <= position.earliest {
                return Err(corrupt(format!(
                    "the broker delivers offset {offset} first from offset {at}"
                )));
            }
            let at = position
                .next
                .saturating_sub(((position.next - at) * 2).max(1))
                .max(position.earliest);
            consumer
                .seek(topic, partition, Offset::Offset(at as i64), timeout)
                .map_err(kafka(format!("positioning {topic}/{partition} at {at}")))?;
            position.seeking = Some(at);
            return Ok(None);
        }
        position.seeking = None;
    }
    if offset < position.next {
        // The head of the batch a read was positioned in, or a record fetched before a seek.
        return Ok(None);
    }
    if offset > position.next {
        // Our topics are neither compacted nor transactional: a gap means lost records.
        return Err(corrupt(format!(
            "the broker delivers offset {offset} where {} belongs",
            position.next
        )));
    }
    let record = to_record(message).map_err(|reason| corrupt(reason.to_owned()))?;
    position.next += 1;
    Ok(Some(record))
}

/// The log on a Kafka-protocol cluster.
pub(crate) struct KafkaLog {
    brokers: String,
    timeout: Duration,
    /// Partition counts of topics known to exist.
    topics: HashMap<String, u32>,
    // Declared before the consumer: each queue holds the consumer and is dropped first.
    readers: HashMap<String, HashMap<u32, Reader>>,
    consumer: Arc<BaseConsumer>,
    producer: ThreadedProducer<Deliveries>,
    /// The consumer's settings, for the clients made when first needed.
    consumer_config: ClientConfig,
    /// A second consumer that fetches a partition's last batch to learn its end offset.
    probe: Option<BaseConsumer>,
    admin: Option<AdminClient<DefaultClientContext>>,
}

impl fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Connects to `brokers` (`host:port,host:port`) and checks that the cluster answers.
    pub(crate) fn connect(brokers: &str, config: &LogConfig) -> Result<KafkaLog, LogError> {
        let timeout_ms = config.kafka_timeout.as_millis().max(1).to_string();
        let mut common = ClientConfig::new();
        common
            .set("bootstrap.servers", brokers)
            .set("client.id", &config.kafka_client_id)
            // A topic that does not exist is an error, never one the broker makes up.
            .set("allow.auto.create.topics", "false");
        let producer: ThreadedProducer<Deliveries> = common
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // An append is a batch already: send it at once rather than wait for more.
            .set("linger.ms", "0")
            .set("message.timeout.ms", &timeout_ms)
            .create_with_context(Deliveries::default())
            .map_err(kafka("creating the producer"))?;
        let mut consumer_config = common;
        consumer_config
            // librdkafka needs a group to assign partitions, but nothing is ever committed to it.
            .set("group.id", format!("{}-reader", config.kafka_client_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A read outside the partition fails instead of silently jumping to an end.
            .set("auto.offset.reset", "error")
            // librdkafka's default 500 ms makes every append-to-read round trip take half a
            // second; brokers that hold a fetch for its whole wait (tansu) add it to each hop.
            .set(
                "fetch.wait.max.ms",
                config.kafka_fetch_wait.as_millis().max(1).to_string(),
            );
        let consumer: BaseConsumer = consumer_config
            .create()
            .map_err(kafka("creating the consumer"))?;
        producer
            .client()
            .fetch_metadata(None, config.kafka_timeout)
            .map_err(kafka(format!("connecting to {brokers}")))?;
        Ok(KafkaLog {
            brokers: brokers.to_owned(),
            timeout: config.kafka_timeout,
            topics: HashMap::new(),
            readers: HashMap::new(),
            consumer: Arc::new(consumer),
            producer,
            consumer_config,
            probe: None,
            admin: None,
        })
    }

    /// The partition count of `topic` from the cluster's metadata, if the topic exists.
    fn fetch_partition_count(&self, topic: &str) -> Result<Option<u32>, LogError> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(kafka(format!("fetching the metadata of {topic}")))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match found.error() {
            None if !found.partitions().is_empty() => Ok(Some(found.partitions().len() as u32)),
            None => Ok(None),
            Some(code) => match RDKafkaErrorCode::from(code) {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    Ok(None)
                }
                code => Err(kafka(format!("fetching the metadata of {topic}"))(
                    KafkaError::MetadataFetch(code),
                )),
            },
        }
    }

    /// Checks that the partition exists, from cached metadata when the topic is known.
    fn check_partition(&mut self, topic: &str, partition: u32) -> Result<(), LogError> {
        check_topic(topic)?;
        let partitions = match self.topics.get(topic) {
            Some(&partitions) => partitions,
            None => {
                let partitions = self
                    .fetch_partition_count(topic)?
                    .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
                self.topics.insert(topic.to_owned(), partitions);
                partitions
            }
        };
        if partition >= partitions {
            return Err(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions,
            });
        }
        Ok(())
    }

    /// The earliest retained offset and the end offset as the broker reports them (a
    /// batch-storing broker reports less than the end: see the module documentation).
    fn watermarks(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition as i32, self.timeout)
            .map_err(kafka(format!(
                "fetching the offsets of {topic}/{partition}"
            )))?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    /// The end offset, given the reported watermarks: one past the last record of the batch
    /// that starts at `reported - 1` (on Kafka that is the last record, so the end is
    /// `reported`).
    fn end_from(
        &mut self,
        topic: &str,
        partition: u32,
        earliest: u64,
        reported: u64,
    ) -> Result<u64, LogError> {
        if reported <= earliest {
            return Ok(reported);
        }
        let context = || format!("fetching the last batch of {topic}/{partition}");
        let probe = match self.probe.take() {
            Some(probe) => probe,
            None => self
                .consumer_config
                .clone()
                .set(
                    "group.id",
                    format!(
                        "{}-probe",
                        self.consumer_config.get("client.id").unwrap_or("eventlog")
                    ),
                )
                .create()
                .map_err(kafka(context()))?,
        };
        let probe = self.probe.insert(probe);
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Offset(reported as i64 - 1))
            .and_then(|()| probe.assign(&assignment))
            .map_err(kafka(context()))?;
        let deadline = Instant::now() + self.timeout;
        let mut end = None;
        let result = loop {
            // Wait for the first record; then take what the same fetch brought, without waiting.
            let timeout = if end.is_some() {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match probe.poll(timeout) {
                Some(Ok(message)) => {
                    if message.topic() == topic
                        && message.partition() == partition as i32
                        && message.offset() >= reported as i64 - 1
                    {
                        end = end.max(Some(message.offset() as u64 + 1));
                    }
                }
                Some(Err(error)) => break Err(kafka(context())(error)),
                None => match end {
                    Some(end) => break Ok(end),
                    None if Instant::now() >= deadline => {
                        break Err(kafka(context())(KafkaError::MessageConsumption(
                            RDKafkaErrorCode::OperationTimedOut,
                        )))
                    }
                    None => {}
                },
            }
        };
        probe.unassign().map_err(kafka(context()))?;
        result
    }

    /// The partition's reader, positioned so that it hands out `from` next.
    fn position(&mut self, topic: &str, partition: u32, from: u64) -> Result<(), LogError> {
        let reader = self
            .readers
            .get_mut(topic)
            .and_then(|readers| readers.get_mut(&partition));
        if reader
            .as_ref()
            .is_some_and(|reader| reader.position.next == from)
        {
            return Ok(());
        }
        let (earliest, reported) = self.watermarks(topic, partition)?;
        if from < earliest || from >= reported {
            let end = self.end_from(topic, partition, earliest, reported)?;
            if from < earliest || from > end {
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    offset: from,
                    earliest,
                    end,
                });
            }
        }
        // The reported end - 1 is where the last batch starts on any broker; starting there,
        // not inside that batch, is what a batch-storing broker needs.
        let at = if reported > earliest && from >= reported - 1 {
            reported - 1
        } else {
            from
        };
        let position = Position {
            next: from,
            seeking: Some(at),
            earliest,
        };
        let context = || format!("positioning {topic}/{partition} at {at}");
        match self
            .readers
            .get_mut(topic)
            .and_then(|readers| readers.get_mut(&partition))
        {
            Some(reader) => {
                self.consumer
                    .seek(
                        topic,
                        partition as i32,
                        Offset::Offset(at as i64),
                        self.timeout,
                    )
                    .map_err(kafka(context()))?;
                reader.position = position;
            }
            None => {
                // Split before assigning, so that no record of this partition ever lands in
                // the consumer's main queue.
                let queue = self
                    .consumer
                    .split_partition_queue(topic, partition as i32)
                    .ok_or_else(|| LogError::UnknownPartition {
                        topic: topic.to_owned(),
                        partition,
                        partitions: self.topics.get(topic).copied().unwrap_or(0),
                    })?;
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(topic, partition as i32, Offset::Offset(at as i64))
                    .and_then(|()| self.consumer.incremental_assign(&assignment))
                    .map_err(kafka(context()))?;
                self.readers
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(partition, Reader { queue, position });
            }
        }
        Ok(())
    }
}

fn to_record(message: &BorrowedMessage<'_>) -> Result<Record, String> {
    let mut kind = None;
    let mut schema = None;
    for header in message.headers().iter().flat_map(|headers| headers.iter()) {
        match header.key {
            "type" => kind = header.value.and_then(|v| std::str::from_utf8(v).ok()),
            "schema" => {
                schema = header
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok())
            }
            _ => {}
        }
    }
    Ok(Record {
        offset: message.offset() as u64,
        kind: kind.ok_or("no UTF-8 \"type\" header")?.to_owned(),
        schema: schema.ok_or("no numeric \"schema\" header")?,
        payload: message.payload().unwrap_or_default().to_vec(),
    })
}

impl Log for KafkaLog {
    fn create_topic(&mut self, topic: &str, partitions: u32) -> Result<(), LogError> {
        check_topic(topic)?;
        if partitions == 0 {
            return Err(LogError::NoPartitions);
        }
        if self.topics.contains_key(topic) {
            return Ok(());
        }
        let admin = match self.admin.take() {
            Some(admin) => admin,
            None => ClientConfig::new()
                .set("bootstrap.servers", &self.brokers)
                .create()
                .map_err(kafka("creating the admin client"))?,
        };
        // Replication factor -1 lets the cluster apply its default.
        let new_topic = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(-1));
        let options = AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout));
        let results = block_on(admin.create_topics([&new_topic], &options));
        self.admin = Some(admin);
        for result in results.map_err(kafka(format!("creating topic {topic}")))? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(kafka(format!("creating topic {topic}"))(
                        KafkaError::AdminOp(code),
                    ))
                }
            }
        }
        // Brokers learn of a new topic a little after the controller answers: wait until the
        // metadata shows it, so that the topic is usable as soon as this returns.
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(count) = self.fetch_partition_count(topic)? {
                self.topics.insert(topic.to_owned(), count);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LogError::UnknownTopic(topic.to_owned()));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[NewRecord<'_>],
    ) -> Result<u64, LogError> {
        self.check_partition(topic, partition)?;
        if records.is_empty() {
            return self.end_offset(topic, partition);
        }
        let context = || format!("appending to {topic}/{partition}");
        let timed_out = || kafka(context())(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        let deadline = Instant::now() + self.timeout;
        // Reports of an earlier batch that failed would be mistaken for this batch's: let
        // librdkafka settle them first (it times messages out after the same timeout).
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            thread::sleep(Duration::from_millis(1));
        }
        let deliveries = self.producer.context();
        lock(&deliveries.reports).clear();
        for (index, record) in records.iter().enumerate() {
            let schema = record.schema.to_string();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "type",
                    value: Some(record.kind),
                })
                .insert(Header {
                    key: "schema",
                    value: Some(&schema),
                });
            let mut message = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, index)
                .partition(partition as i32)
                .payload(record.payload)
                .headers(headers);
            loop {
                match self.producer.send(message) {
                    Ok(()) => break,
                    // The local queue is full until deliveries make room.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if Instant::now() >= deadline {
                            return Err(timed_out());
                        }
                        message = back;
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => return Err(kafka(context())(error)),
                }
            }
        }
        let mut reports = lock(&deliveries.reports);
        while reports.len() < records.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            reports = deliveries
                .arrived
                .wait_timeout(reports, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut reports = std::mem::take(&mut *reports);
        reports.sort_unstable_by_key(|&(index, _)| index);
        let mut offsets = Vec::with_capacity(reports.len());
        for (_, report) in reports {
            offsets.push(report.map_err(kafka(context()))?);
        }
        let first = offsets[0];
        if offsets
            .iter()
            .zip(first..)
            .any(|(&offset, expected)| offset != expected)
        {
            return Err(LogError::WriterConflict {
                topic: topic.to_owned(),
                partition,
                detail: format!("the batch from offset {first} was interleaved with other records"),
            });
        }
        Ok(first as u64)
    }

    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.check_partition(topic, partition)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        self.position(topic, partition, from)?;
        // Serve the main queue's events (client errors and logs; records never arrive there).
        while let Some(event) = self.consumer.poll(Duration::ZERO) {
            if let Err(error) = event {
                tracing::warn!(%error, "Kafka consumer error");
            }
        }
        let Some(reader) = self
            .readers
            .get_mut(topic)
            .and_then(|readers| readers.get_mut(&partition))
        else {
            return Err(LogError::UnknownTopic(topic.to_owned()));
        };
        let deadline = Instant::now() + wait;
        let mut records = Vec::new();
        while records.len() < max {
            let timeout = if records.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let accepted = match reader.queue.poll(timeout) {
                None if records.is_empty() && Instant::now() < deadline => continue,
                None => break,
                Some(Ok(message)) => {
                    accept(&self.consumer, &mut reader.position, &message, self.timeout)
                }
                Some(Err(error)) => Err(kafka(format!("reading {topic}/{partition}"))(error)),
            };
            match accepted {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(error) => {
                    reader.position.next = MUST_SEEK;
                    // Hand out the records before the failure; the next read meets it again.
                    if records.is_empty() {
                        return Err(error);
                    }
                    break;
                }
            }
        }
        Ok(records)
    }

    fn end_offset(&mut self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.check_partition(topic, partition)?;
        let (earliest, reported) = self.watermarks(topic, partition)?;
        self.end_from(topic, partition, earliest, reported)
    }

    fn flush(&mut self) -> Result<(), LogError> {
        Ok(())
    }
}

/// Wakes the thread blocked in [`block_on`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread. The admin client is async only, and its
/// futures are completed by its own background thread, so parking until woken is all it takes.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}
