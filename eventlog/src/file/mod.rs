//! The file backend: one directory per topic, one per partition, and in it segment files named
//! by the offset of their first record (`00000000000000000000.log`).
//!
//! Architecture Invariant: a partition has one writer, enforced by an exclusive `flock` on its
//! `writer.lock`, taken on the first append through a handle and held until the handle drops.
//! Readers take no lock: they follow the files as they grow, and they follow a segment roll by
//! opening the segment named after the next offset they expect. The writer never changes a byte
//! a reader may have read, except when recovery truncates a torn tail that no reader can have
//! accepted (readers stop at the first invalid frame).

mod segment;

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use crate::{check_topic, FsyncPolicy, Log, LogConfig, LogError, NewRecord, Record};
use segment::{Next, SegmentReader, HEADER_LEN, MAGIC, SEAL};

/// How long a waiting `read` sleeps between looks at the file. Short, because the time from an
/// append in one process to the read in another is on the engine's critical path; a look is one
/// `pread` that finds nothing and a short sleep: an idle waiting reader costs a few percent of a
/// core.
const POLL_INTERVAL: Duration = Duration::from_micros(100);
/// A sparse index entry every this many bytes bounds the scan of a seek to this much.
const INDEX_INTERVAL: u64 = 64 << 10;
const LOCK_FILE: &str = "writer.lock";

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these mutexes stays consistent whatever a panicking holder was doing.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir))
}

/// The segment-file log rooted at one directory.
#[derive(Debug)]
pub(crate) struct FileLog {
    root: PathBuf,
    config: LogConfig,
    topics: HashMap<String, Vec<Partition>>,
    /// The first fsync failure. After one, the kernel may have dropped dirty pages and a later
    /// fsync can succeed without them, so the handle refuses further appends.
    sync_error: Arc<Mutex<Option<String>>>,
    flusher: Option<Flusher>,
}

impl FileLog {
    pub(crate) fn open(root: PathBuf, config: LogConfig) -> Result<FileLog, LogError> {
        fs::create_dir_all(&root).map_err(io_error(&root))?;
        let sync_error = Arc::new(Mutex::new(None));
        let flusher = match config.fsync {
            FsyncPolicy::EveryMillis(millis) => Some(Flusher::start(
                Duration::from_millis(millis.max(1)),
                Arc::clone(&sync_error),
            )?),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(FileLog {
            root,
            config,
            topics: HashMap::new(),
            sync_error,
            flusher,
        })
    }

    fn check_sync(&self) -> Result<(), LogError> {
        match &*lock(&self.sync_error) {
            Some(error) => Err(LogError::SyncFailed(error.clone())),
            None => Ok(()),
        }
    }

    fn partition(&mut self, topic: &str, partition: u32) -> Result<&mut Partition, LogError> {
        find_partition(&self.root, &mut self.topics, topic, partition)
    }
}

/// The partition of a topic under `root`, learning the topic's partitions on first use. Only
/// topics found are remembered: another process may create a missing one at any time.
fn find_partition<'a>(
    root: &Path,
    topics: &'a mut HashMap<String, Vec<Partition>>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut Partition, LogError> {
    check_topic(topic)?;
    if !topics.contains_key(topic) {
        let dir = root.join(topic);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LogError::UnknownTopic(topic.to_owned()))
            }
            Err(e) => return Err(io_error(&dir)(e)),
        };
        let mut count = 0;
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            count += u32::from(
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok()),
            );
        }
        let partitions = (0..count)
            .map(|p| Partition::new(topic, p, dir.join(p.to_string())))
            .collect();
        topics.insert(topic.to_owned(), partitions);
    }
    let partitions = topics
        .get_mut(topic)
        .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
    let count = partitions.len() as u32;
    partitions
        .get_mut(partition as usize)
        .ok_or_else(|| LogError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions: count,
        })
}

impl Log for FileLog {
    fn create_topic(&mut self, topic: &str, partitions: u32) -> Result<(), LogError> {
        check_topic(topic)?;
        if partitions == 0 {
            return Err(LogError::NoPartitions);
        }
        let dir = self.root.join(topic);
        if dir.exists() {
            return Ok(());
        }
        // The topic is built under a temporary name and renamed into place, so that every
        // process sees either no topic or a whole one, and two creators cannot both half-win.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let staging = self.root.join(format!(
            ".creating-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let durable = self.config.fsync != FsyncPolicy::Never;
        let build = || -> Result<(), LogError> {
            fs::create_dir(&staging).map_err(io_error(&staging))?;
            for p in 0..partitions {
                let part = staging.join(p.to_string());
                fs::create_dir(&part).map_err(io_error(&part))?;
                let path = part.join(segment_name(0));
                let file = File::create(&path).map_err(io_error(&path))?;
                file.write_all_at(&MAGIC, 0).map_err(io_error(&path))?;
                if durable {
                    file.sync_data().map_err(io_error(&path))?;
                    sync_dir(&part)?;
                }
            }
            if durable {
                sync_dir(&staging)?;
            }
            Ok(())
        };
        let built = build().and_then(|()| match fs::rename(&staging, &dir) {
            Ok(()) => Ok(true),
            // Another handle created the topic meanwhile: theirs stands.
            Err(_) if dir.is_dir() => Ok(false),
            Err(e) => Err(io_error(&dir)(e)),
        });
        if !matches!(built, Ok(true)) {
            // Best effort: a leftover staging directory is ignored by everything else.
            let _ = fs::remove_dir_all(&staging);
        }
        if built? && durable {
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[NewRecord<'_>],
    ) -> Result<u64, LogError> {
        self.check_sync()?;
        let lens = records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                segment::frame_len(record)
                    .map_err(|reason| LogError::RecordTooLarge { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = lens.iter().sum::<usize>() as u64;
        if bytes > u64::from(u32::MAX) {
            return Err(LogError::BatchTooLarge {
                bytes,
                limit: u32::MAX.into(),
            });
        }
        let part = find_partition(&self.root, &mut self.topics, topic, partition)?;
        let flusher = self.flusher.as_ref().map(|flusher| &*flusher.shared);
        let result = part.append(records, &lens, &self.config, flusher);
        if let Err(LogError::SyncFailed(error)) = &result {
            lock(&self.sync_error).get_or_insert_with(|| error.clone());
        }
        result
    }

    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let part = self.partition(topic, partition)?;
        let deadline = Instant::now() + wait;
        loop {
            let records = part.read_available(from, max)?;
            let now = Instant::now();
            if !records.is_empty() || max == 0 || now >= deadline {
                return Ok(records);
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn end_offset(&mut self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.partition(topic, partition)?.end_offset()
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.check_sync()?;
        for part in self.topics.values().flatten() {
            if let Some(writer) = &part.writer {
                if let Err(e) = writer.file.sync_data() {
                    let error = format!("{}: {e}", writer.path.display());
                    lock(&self.sync_error).get_or_insert_with(|| error.clone());
                    return Err(LogError::SyncFailed(error));
                }
            }
        }
        Ok(())
    }
}

/// One partition as this handle knows it.
#[derive(Debug)]
struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    /// Known segments, oldest first. Refreshed from the directory on seeks and when it is empty;
    /// sequential readers discover new segments by name instead.
    segments: Vec<Segment>,
    /// Where the last `read` stopped, so that the next sequential one continues without a seek.
    cursor: Option<Cursor>,
    /// Where the last `end_offset` stopped, for handles that do not write this partition.
    tail: Option<Cursor>,
    writer: Option<Writer>,
}

#[derive(Debug)]
struct Segment {
    base: u64,
    /// Sparse `(offset, file position)` pairs, ascending, at least [`INDEX_INTERVAL`] apart.
    index: Vec<(u64, u64)>,
}

/// The next record to read: its offset and the reader positioned at its frame.
#[derive(Debug)]
struct Cursor {
    base: u64,
    offset: u64,
    reader: SegmentReader,
    /// Whether the reader is between two batches: only such positions go into the index, so
    /// that a seek (and writer recovery) always starts at a batch.
    boundary: bool,
}

#[derive(Debug)]
struct Writer {
    /// Holds the `flock`; closing it releases the partition.
    _lock: File,
    file: Arc<File>,
    path: PathBuf,
    base: u64,
    len: u64,
    next_offset: u64,
    /// Older segments, oldest first, with their sizes, for retention.
    sealed: VecDeque<(u64, u64)>,
    sealed_bytes: u64,
    /// Present under [`FsyncPolicy::EveryMillis`]: how the background flusher learns of writes.
    sync: Option<Arc<SyncTarget>>,
    buf: Vec<u8>,
}

impl Partition {
    fn new(topic: &str, id: u32, dir: PathBuf) -> Partition {
        Partition {
            topic: topic.to_owned(),
            id,
            dir,
            segments: Vec::new(),
            cursor: None,
            tail: None,
            writer: None,
        }
    }

    fn segment_path(&self, base: u64) -> PathBuf {
        self.dir.join(segment_name(base))
    }

    fn corrupt(&self, offset: u64, reason: String) -> LogError {
        LogError::Corrupt {
            topic: self.topic.clone(),
            partition: self.id,
            offset,
            reason,
        }
    }

    /// Re-lists the segment files, keeping what is known about those still there.
    fn refresh_segments(&mut self) -> Result<(), LogError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error(&self.dir))?;
        let mut bases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&self.dir))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut known: HashMap<u64, Segment> =
            self.segments.drain(..).map(|s| (s.base, s)).collect();
        self.segments = bases
            .into_iter()
            .map(|base| {
                known.remove(&base).unwrap_or(Segment {
                    base,
                    index: Vec::new(),
                })
            })
            .collect();
        if self.segments.is_empty() {
            return Err(self.corrupt(0, format!("{} holds no segment file", self.dir.display())));
        }
        Ok(())
    }

    /// Notes that the frame of `offset` starts at `pos` in segment `base`, if the index lacks
    /// an entry near it.
    fn note_position(segments: &mut [Segment], base: u64, offset: u64, pos: u64) {
        if let Ok(i) = segments.binary_search_by_key(&base, |s| s.base) {
            let index = &mut segments[i].index;
            if pos >= index.last().map_or(0, |&(_, last)| last) + INDEX_INTERVAL {
                index.push((offset, pos));
            }
        }
    }

    fn open_segment(&self, base: u64) -> io::Result<File> {
        File::open(self.segment_path(base))
    }

    /// A cursor at or before `from`, in the segment that holds it, at the nearest indexed frame.
    fn seek(&mut self, from: u64) -> Result<Cursor, LogError> {
        if self.segments.last().is_none_or(|last| from >= last.base) {
            self.refresh_segments()?;
        }
        for attempt in 0..2 {
            let earliest = self.segments.first().map_or(0, |s| s.base);
            if from < earliest {
                let end = self.end_offset()?;
                return Err(LogError::OffsetOutOfRange {
                    topic: self.topic.clone(),
                    partition: self.id,
                    offset: from,
                    earliest,
                    end,
                });
            }
            let segment = &self.segments[self.segments.partition_point(|s| s.base <= from) - 1];
            let (offset, pos) = match segment.index.partition_point(|&(offset, _)| offset <= from) {
                0 => (segment.base, 0),
                i => segment.index[i - 1],
            };
            let base = segment.base;
            match self.open_segment(base) {
                Ok(file) => {
                    return Ok(Cursor {
                        base,
                        offset,
                        reader: SegmentReader::new(file, pos),
                        boundary: true,
                    })
                }
                // Retention deleted it since the last listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                    self.refresh_segments()?
                }
                Err(e) => return Err(io_error(&self.segment_path(base))(e)),
            }
        }
        Err(self.corrupt(
            from,
            "its segment vanished twice while opening it".to_owned(),
        ))
    }

    /// Moves `cursor` over complete, valid records, following segment rolls, until it reaches
    /// offset `until`, has pushed `max` records to `out`, or finds no more data.
    fn advance(
        &mut self,
        cursor: &mut Cursor,
        until: u64,
        mut out: Option<(&mut Vec<Record>, usize)>,
    ) -> Result<(), LogError> {
        loop {
            if cursor.offset >= until || out.as_ref().is_some_and(|(out, max)| out.len() >= *max) {
                return Ok(());
            }
            let pos = cursor.reader.position();
            let next = cursor
                .reader
                .next(cursor.offset)
                .map_err(|e| io_error(&self.segment_path(cursor.base))(e))?;
            match next {
                Next::Frame(frame) => {
                    if cursor.boundary {
                        Partition::note_position(
                            &mut self.segments,
                            cursor.base,
                            frame.offset,
                            pos,
                        );
                    }
                    cursor.boundary = frame.batch_left == 0;
                    if let Some((out, _)) = &mut out {
                        out.push(cursor.reader.record(&frame));
                    }
                    cursor.offset += 1;
                }
                // The writer may still add to this segment.
                Next::End | Next::Incomplete => return Ok(()),
                Next::Sealed => {
                    let file = match self.open_segment(cursor.offset) {
                        Ok(file) => file,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            // Retention deleted it (this reader fell behind), or a writer died
                            // between sealing this segment and creating the next, which its
                            // recovery completes: wait for that.
                            self.refresh_segments()?;
                            let earliest = self.segments[0].base;
                            let behind = earliest > cursor.offset
                                || self.segments.last().is_some_and(|s| s.base > cursor.offset);
                            if !behind {
                                return Ok(());
                            }
                            return Err(LogError::OffsetOutOfRange {
                                topic: self.topic.clone(),
                                partition: self.id,
                                offset: cursor.offset,
                                earliest,
                                end: self.end_offset()?,
                            });
                        }
                        Err(e) => return Err(io_error(&self.segment_path(cursor.offset))(e)),
                    };
                    if let Err(i) = self
                        .segments
                        .binary_search_by_key(&cursor.offset, |s| s.base)
                    {
                        self.segments.insert(
                            i,
                            Segment {
                                base: cursor.offset,
                                index: Vec::new(),
                            },
                        );
                    }
                    *cursor = Cursor {
                        base: cursor.offset,
                        offset: cursor.offset,
                        reader: SegmentReader::new(file, 0),
                        boundary: true,
                    };
                }
                Next::Bad { reason, len } => {
                    // Damage that valid data follows, or in a segment the writer has left, is
                    // corruption. Damage at the very end of the active segment is what a torn
                    // write looks like: the writer truncates it when it recovers, so for now
                    // there is simply nothing more to read.
                    let file_len = cursor
                        .reader
                        .file_len()
                        .map_err(io_error(&self.segment_path(cursor.base)))?;
                    let followed = len.is_some_and(|len| pos + len < file_len);
                    self.refresh_segments()?;
                    let sealed = self.segments.last().is_some_and(|s| s.base > cursor.base);
                    if followed || sealed {
                        return Err(self.corrupt(cursor.offset, reason));
                    }
                    return Ok(());
                }
            }
        }
    }

    fn read_available(&mut self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut cursor = match self.cursor.take() {
            Some(cursor) if cursor.offset == from => cursor,
            _ => {
                let mut cursor = self.seek(from)?;
                self.advance(&mut cursor, from, None)?;
                if cursor.offset < from {
                    let earliest = self.segments.first().map_or(0, |s| s.base);
                    return Err(LogError::OffsetOutOfRange {
                        topic: self.topic.clone(),
                        partition: self.id,
                        offset: from,
                        earliest,
                        end: cursor.offset,
                    });
                }
                cursor
            }
        };
        let mut records = Vec::new();
        let result = self.advance(&mut cursor, u64::MAX, Some((&mut records, max)));
        self.cursor = Some(cursor);
        match result {
            // Hand out what came before the damage; the next read starts at it and reports it.
            Err(_) if !records.is_empty() => Ok(records),
            Err(e) => Err(e),
            Ok(()) => Ok(records),
        }
    }

    fn end_offset(&mut self) -> Result<u64, LogError> {
        if let Some(writer) = &self.writer {
            return Ok(writer.next_offset);
        }
        let mut tail = match self.tail.take() {
            Some(tail) => tail,
            None => {
                self.refresh_segments()?;
                let last = self.segments.len() - 1;
                let from = self.segments[last]
                    .index
                    .last()
                    .map_or(self.segments[last].base, |&(offset, _)| offset);
                self.seek(from)?
            }
        };
        let result = self.advance(&mut tail, u64::MAX, None);
        let end = tail.offset;
        self.tail = Some(tail);
        result.map(|()| end)
    }

    /// Takes the partition's writer lock and recovers the active segment: verifies every frame,
    /// truncates a torn tail, and refuses (as corruption) damage that valid records follow.
    fn open_writer(
        &mut self,
        config: &LogConfig,
        flusher: Option<&FlushShared>,
    ) -> Result<Writer, LogError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match flock(&lock_file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let holder = fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(LogError::WriterConflict {
                    topic: self.topic.clone(),
                    partition: self.id,
                    detail: format!(
                        "{} is locked (by process {})",
                        lock_path.display(),
                        holder.trim()
                    ),
                });
            }
            Err(e) => return Err(io_error(&lock_path)(e.into())),
        }
        // The holder's pid, for the error another would-be writer gets.
        let pid = std::process::id().to_string();
        lock_file
            .set_len(0)
            .and_then(|()| lock_file.write_all_at(pid.as_bytes(), 0))
            .map_err(io_error(&lock_path))?;

        self.refresh_segments()?;
        let (base, index_from) = {
            let last = &self.segments[self.segments.len() - 1];
            (
                last.base,
                last.index.last().copied().unwrap_or((last.base, 0)),
            )
        };
        let path = self.segment_path(base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut reader =
            SegmentReader::new(file.try_clone().map_err(io_error(&path))?, index_from.1);
        let mut next_offset = index_from.0;
        // The end of the last complete batch, where a torn batch is cut off whole.
        let mut committed = (index_from.1, next_offset);
        let mut boundary = true;
        // Where the batch being read ends, once one of its frames has said so.
        let mut batch_end = None;
        let mut sealed_tail = false;
        let len = loop {
            let pos = reader.position();
            match reader.next(next_offset).map_err(io_error(&path))? {
                Next::Frame(frame) => {
                    if boundary {
                        Partition::note_position(&mut self.segments, base, frame.offset, pos);
                    }
                    let end = reader.position();
                    batch_end.get_or_insert(end + u64::from(frame.batch_left));
                    next_offset += 1;
                    boundary = frame.batch_left == 0;
                    if boundary {
                        committed = (end, next_offset);
                        batch_end = None;
                    }
                }
                Next::End if boundary => break reader.position(),
                Next::Sealed if boundary => {
                    sealed_tail = true;
                    break pos + SEAL.len() as u64;
                }
                Next::End | Next::Sealed | Next::Incomplete | Next::Bad { .. } => {
                    // Valid records after the damaged batch were acknowledged: that is
                    // corruption, never a torn write, which can only be the last batch.
                    let search_from = batch_end.unwrap_or(0).max(pos + 1);
                    if let Some(later) = segment::valid_frame_from(&file, search_from, next_offset)
                        .map_err(io_error(&path))?
                    {
                        return Err(self.corrupt(
                            next_offset,
                            format!(
                                "invalid frame at byte {pos} of {}, yet record {later} follows it",
                                path.display()
                            ),
                        ));
                    }
                    let file_len = reader.file_len().map_err(io_error(&path))?;
                    tracing::warn!(
                        topic = %self.topic, partition = self.id, segment = %path.display(),
                        at = committed.0, dropped_bytes = file_len.saturating_sub(committed.0),
                        next_offset = committed.1,
                        "truncating a torn batch left by an interrupted write"
                    );
                    file.set_len(committed.0).map_err(io_error(&path))?;
                    next_offset = committed.1;
                    break committed.0;
                }
            }
        };
        let len = if len < HEADER_LEN {
            // Even the header was torn: write it again.
            file.write_all_at(&MAGIC, 0).map_err(io_error(&path))?;
            HEADER_LEN
        } else {
            len
        };
        if config.fsync != FsyncPolicy::Never {
            file.sync_data().map_err(io_error(&path))?;
        }
        let (file, base, path, len) = if sealed_tail {
            // The last writer died between sealing this segment and creating the next one,
            // which readers may be waiting for: finish the roll.
            let next = self.create_segment(next_offset, config)?;
            (
                next,
                next_offset,
                self.segment_path(next_offset),
                HEADER_LEN,
            )
        } else {
            (file, base, path, len)
        };

        let mut sealed = VecDeque::new();
        for segment in &self.segments[..self.segments.len() - 1] {
            let path = self.segment_path(segment.base);
            let bytes = fs::metadata(&path).map_err(io_error(&path))?.len();
            sealed.push_back((segment.base, bytes));
        }
        let file = Arc::new(file);
        let sync = flusher.map(|flusher| flusher.register(Arc::clone(&file)));
        Ok(Writer {
            _lock: lock_file,
            file,
            path,
            base,
            len,
            next_offset,
            sealed_bytes: sealed.iter().map(|&(_, bytes)| bytes).sum(),
            sealed,
            sync,
            buf: Vec::new(),
        })
    }

    fn append(
        &mut self,
        records: &[NewRecord<'_>],
        lens: &[usize],
        config: &LogConfig,
        flusher: Option<&FlushShared>,
    ) -> Result<u64, LogError> {
        let mut writer = match self.writer.take() {
            Some(writer) => writer,
            None => {
                let writer = self.open_writer(config, flusher)?;
                // Recovery may have truncated bytes a cursor had looked at.
                self.cursor = None;
                self.tail = None;
                writer
            }
        };
        let result = self.write_batch(&mut writer, records, lens, config);
        // After a failed write or roll, part of it may be on disk. Dropping the writer (and its
        // lock) makes the next append recover the partition from what is there, exactly as
        // after a crash.
        if result.is_ok() {
            self.writer = Some(writer);
        }
        result
    }

    fn write_batch(
        &mut self,
        writer: &mut Writer,
        records: &[NewRecord<'_>],
        lens: &[usize],
        config: &LogConfig,
    ) -> Result<u64, LogError> {
        if records.is_empty() {
            return Ok(writer.next_offset);
        }
        let batch_len = lens.iter().sum::<usize>() as u64;
        if writer.len > HEADER_LEN && writer.len + batch_len > config.segment_bytes {
            self.roll(writer, config)?;
        }
        let first = writer.next_offset;
        Partition::note_position(&mut self.segments, writer.base, first, writer.len);
        writer.buf.clear();
        for (offset, (record, len)) in (first..).zip(records.iter().zip(lens)) {
            let batch_left = batch_len - (writer.buf.len() + len) as u64;
            segment::encode(&mut writer.buf, offset, batch_left as u32, record);
        }
        writer
            .file
            .write_all_at(&writer.buf, writer.len)
            .map_err(io_error(&writer.path))?;
        match config.fsync {
            FsyncPolicy::Always => writer
                .file
                .sync_data()
                .map_err(|e| LogError::SyncFailed(format!("{}: {e}", writer.path.display())))?,
            FsyncPolicy::EveryMillis(_) => {
                if let Some(sync) = &writer.sync {
                    sync.dirty.store(true, Ordering::Release);
                }
            }
            FsyncPolicy::Never => {}
        }
        writer.len += writer.buf.len() as u64;
        writer.next_offset += records.len() as u64;
        if let Some(retention) = config.retention_bytes {
            self.apply_retention(writer, retention);
        }
        Ok(first)
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&mut self, writer: &mut Writer, config: &LogConfig) -> Result<(), LogError> {
        writer
            .file
            .write_all_at(&SEAL, writer.len)
            .map_err(io_error(&writer.path))?;
        writer.len += SEAL.len() as u64;
        // Sealed segments are synced, so recovery needs to verify only the active one.
        if config.fsync != FsyncPolicy::Never {
            writer
                .file
                .sync_data()
                .map_err(|e| LogError::SyncFailed(format!("{}: {e}", writer.path.display())))?;
        }
        let base = writer.next_offset;
        let file = self.create_segment(base, config)?;
        writer.sealed.push_back((writer.base, writer.len));
        writer.sealed_bytes += writer.len;
        writer.file = Arc::new(file);
        if let Some(sync) = &writer.sync {
            *lock(&sync.file) = Arc::clone(&writer.file);
        }
        writer.path = self.segment_path(base);
        writer.base = base;
        writer.len = HEADER_LEN;
        Ok(())
    }

    /// Creates the segment starting at `base`, holding just its header, and lists it.
    fn create_segment(&mut self, base: u64, config: &LogConfig) -> Result<File, LogError> {
        let durable = config.fsync != FsyncPolicy::Never;
        let path = self.segment_path(base);
        // The header is written under a temporary name and renamed in, so a reader that finds
        // the segment by name always finds its header.
        let staging = self.dir.join(format!(".{base}.new"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)
            .map_err(io_error(&staging))?;
        file.write_all_at(&MAGIC, 0).map_err(io_error(&staging))?;
        if durable {
            file.sync_data().map_err(io_error(&staging))?;
        }
        fs::rename(&staging, &path).map_err(io_error(&path))?;
        if durable {
            sync_dir(&self.dir)?;
        }
        self.segments.push(Segment {
            base,
            index: Vec::new(),
        });
        Ok(file)
    }

    /// Deletes the oldest sealed segments while the partition keeps `retention` bytes without
    /// them. A failure only delays the deletion to the next append: the append itself stands.
    fn apply_retention(&mut self, writer: &mut Writer, retention: u64) {
        while let Some(&(base, bytes)) = writer.sealed.front() {
            if writer.sealed_bytes + writer.len - bytes < retention {
                break;
            }
            let path = self.segment_path(base);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete a segment past retention");
                    return;
                }
            }
            writer.sealed.pop_front();
            writer.sealed_bytes -= bytes;
            self.segments.retain(|s| s.base != base);
        }
    }
}

/// The active segment of one writer, as the background flusher sees it.
#[derive(Debug)]
struct SyncTarget {
    file: Mutex<Arc<File>>,
    /// Set after each write, cleared by the flusher just before it syncs.
    dirty: AtomicBool,
}

#[derive(Debug)]
struct FlushShared {
    targets: Mutex<Vec<Arc<SyncTarget>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    sync_error: Arc<Mutex<Option<String>>>,
}

impl FlushShared {
    fn register(&self, file: Arc<File>) -> Arc<SyncTarget> {
        let target = Arc::new(SyncTarget {
            file: Mutex::new(file),
            dirty: AtomicBool::new(false),
        });
        lock(&self.targets).push(Arc::clone(&target));
        target
    }

    fn sync_dirty(&self) {
        let targets = lock(&self.targets).clone();
        for target in targets {
            // Clearing before syncing: a write that lands after the swap sets it again and is
            // synced next round, so no write is ever left unsynced.
            if target.dirty.swap(false, Ordering::AcqRel) {
                let file = Arc::clone(&lock(&target.file));
                if let Err(e) = file.sync_data() {
                    tracing::error!(error = %e, "fsync of the event log failed; appends now fail");
                    lock(&self.sync_error).get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// The background thread of [`FsyncPolicy::EveryMillis`].
#[derive(Debug)]
struct Flusher {
    shared: Arc<FlushShared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(
        interval: Duration,
        sync_error: Arc<Mutex<Option<String>>>,
    ) -> Result<Flusher, LogError> {
        let shared = Arc::new(FlushShared {
            targets: Mutex::new(Vec::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            sync_error,
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("eventlog-fsync".to_owned())
            .spawn(move || loop {
                let stop = {
                    let stop = lock(&theirs.stop);
                    let (stop, _) = theirs
                        .wake
                        .wait_timeout_while(stop, interval, |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    *stop
                };
                theirs.sync_dirty();
                if stop {
                    return;
                }
            })
            .map_err(|source| LogError::Io {
                path: PathBuf::from("<fsync thread>"),
                source,
            })?;
        Ok(Flusher {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    /// Stops the thread after a last sync, so a handle dropped cleanly leaves nothing unsynced.
    fn drop(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
