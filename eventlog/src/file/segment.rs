//! The on-disk format of a segment file and a buffered reader over it.
//!
//! A segment starts with an 8-byte header ([`MAGIC`], whose last byte is the format version)
//! and holds frames back to back, all little-endian:
//!
//! ```text
//! body_len u32 | crc32(body) u32
//! body: offset u64 | batch_left u32 | schema u16 | kind_len u16 | kind | payload
//! ```
//!
//! Each frame carries its own offset, so a reader can check that frames are contiguous and a
//! frame can never be read as another offset's record. `batch_left` is the number of bytes of
//! the same appended batch that follow the frame (0 for a batch's last frame): a batch is
//! visible only once all of it is in the file, and recovery drops an incomplete batch whole, so
//! an append is atomic even when a crash interrupts its write.
//!
//! A segment the writer has left ends with [`SEAL`], so that a reader at the end of a segment
//! knows, without asking the file system, whether to wait for more or to go on to the next
//! segment (named by the next offset).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use crate::{NewRecord, Record};

/// The first bytes of every segment file; the last byte is the format version.
pub(super) const MAGIC: [u8; 8] = *b"GMLOG\0\0\x01";
pub(super) const HEADER_LEN: u64 = MAGIC.len() as u64;
/// The last bytes of a segment the writer has left for the next one: a zero body length, which
/// no frame has.
pub(super) const SEAL: [u8; 8] = *b"\0\0\0\0SEAL";
/// Length and CRC in front of every body.
const PREFIX_LEN: usize = 8;
/// The fixed part of a body: offset, batch_left, schema, kind length.
const BODY_FIXED_LEN: usize = 16;
/// The largest body accepted. A bound keeps a corrupt length field from making a reader wait for
/// (or allocate) gigabytes, and keeps one record well below a segment.
pub(super) const MAX_BODY_LEN: usize = 64 << 20;
/// How much a reader asks the kernel for at a time.
const CHUNK: usize = 128 << 10;

/// The bytes a record takes on disk, or why it cannot be stored.
pub(super) fn frame_len(record: &NewRecord<'_>) -> Result<usize, String> {
    if record.kind.len() > usize::from(u16::MAX) {
        return Err(format!(
            "kind is {} bytes, at most {} fit",
            record.kind.len(),
            u16::MAX
        ));
    }
    let body = BODY_FIXED_LEN + record.kind.len() + record.payload.len();
    if body > MAX_BODY_LEN {
        return Err(format!("{body} bytes of body, at most {MAX_BODY_LEN} fit"));
    }
    Ok(PREFIX_LEN + body)
}

/// Appends the frame of `record` at `offset` to `buf`, followed in its batch by `batch_left`
/// more bytes. The caller has checked [`frame_len`].
pub(super) fn encode(buf: &mut Vec<u8>, offset: u64, batch_left: u32, record: &NewRecord<'_>) {
    let body_len = BODY_FIXED_LEN + record.kind.len() + record.payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&batch_left.to_le_bytes());
    buf.extend_from_slice(&record.schema.to_le_bytes());
    buf.extend_from_slice(&(record.kind.len() as u16).to_le_bytes());
    buf.extend_from_slice(record.kind.as_bytes());
    buf.extend_from_slice(record.payload);
    let crc = crc32fast::hash(&buf[start + PREFIX_LEN..]);
    buf[start + 4..start + PREFIX_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// A frame parsed in place; the ranges index the bytes it was parsed from.
#[derive(Debug)]
struct Parsed {
    len: usize,
    offset: u64,
    batch_left: u32,
    schema: u16,
    kind: Range<usize>,
    payload: Range<usize>,
}

#[derive(Debug)]
enum Parse {
    Frame(Parsed),
    /// The bytes end before the frame does; it needs this many in all.
    Short(usize),
    Seal,
    /// Not a valid frame; `len` is the frame's length when the length field was plausible.
    Bad {
        reason: String,
        len: Option<usize>,
    },
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Parses the frame at the start of `bytes`.
fn parse(bytes: &[u8]) -> Parse {
    if bytes.len() < PREFIX_LEN {
        return Parse::Short(PREFIX_LEN);
    }
    if bytes[..PREFIX_LEN] == SEAL {
        return Parse::Seal;
    }
    let body_len = le_u32(bytes, 0) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Parse::Bad {
            reason: format!("impossible body length {body_len}"),
            len: None,
        };
    }
    let len = PREFIX_LEN + body_len;
    if bytes.len() < len {
        return Parse::Short(len);
    }
    let body = &bytes[PREFIX_LEN..len];
    if crc32fast::hash(body) != le_u32(bytes, 4) {
        return Parse::Bad {
            reason: "checksum mismatch".to_owned(),
            len: Some(len),
        };
    }
    let kind_len = usize::from(le_u16(body, 14));
    if BODY_FIXED_LEN + kind_len > body_len {
        let reason = format!("kind length {kind_len} overruns the body");
        return Parse::Bad {
            reason,
            len: Some(len),
        };
    }
    let kind = PREFIX_LEN + BODY_FIXED_LEN..PREFIX_LEN + BODY_FIXED_LEN + kind_len;
    if std::str::from_utf8(&bytes[kind.clone()]).is_err() {
        return Parse::Bad {
            reason: "kind is not UTF-8".to_owned(),
            len: Some(len),
        };
    }
    Parse::Frame(Parsed {
        len,
        offset: le_u64(body, 0),
        batch_left: le_u32(body, 8),
        schema: le_u16(body, 12),
        payload: kind.end..len,
        kind,
    })
}

/// The outcome of reading at a reader's position.
#[derive(Debug)]
pub(super) enum Next {
    /// A valid frame for the expected offset, now consumed.
    Frame(Frame),
    /// The file ends exactly here.
    End,
    /// The segment's [`SEAL`] is here: the log goes on in the next segment.
    Sealed,
    /// The file ends inside a frame, inside the frame's batch, or inside the segment header:
    /// a write in progress or a torn write.
    Incomplete,
    /// The bytes here are no valid frame for the expected offset. `len` is the frame's length
    /// when its length field was plausible, so a caller can tell whether bytes follow it.
    Bad { reason: String, len: Option<u64> },
}

/// A frame the reader just consumed; its bytes stay in the reader until the next call.
#[derive(Debug)]
pub(super) struct Frame {
    pub offset: u64,
    /// Bytes of the frame's batch after it.
    pub batch_left: u32,
    schema: u16,
    kind: Range<usize>,
    payload: Range<usize>,
}

/// Reads frames sequentially from a segment file with positioned reads (so it shares no file
/// position with anyone) through a buffer. Bytes that do not form a complete valid frame are
/// never kept: the next call reads them again, because the writer may still be writing them or
/// may truncate and rewrite them when it recovers.
#[derive(Debug)]
pub(super) struct SegmentReader {
    file: File,
    buf: Vec<u8>,
    /// File position of `buf[start]`, the next unread byte.
    pos: u64,
    start: usize,
    end: usize,
    /// The file is known to be at least this long.
    known_len: u64,
}

impl SegmentReader {
    /// A reader at `pos`, which must be 0 (the header) or the start of a frame.
    pub(super) fn new(file: File, pos: u64) -> SegmentReader {
        SegmentReader {
            file,
            buf: Vec::new(),
            pos,
            start: 0,
            end: 0,
            known_len: 0,
        }
    }

    /// The file position of the next frame.
    pub(super) fn position(&self) -> u64 {
        self.pos
    }

    pub(super) fn file_len(&mut self) -> io::Result<u64> {
        self.known_len = self.file.metadata()?.len();
        Ok(self.known_len)
    }

    /// Whether the file holds at least `len` bytes, asking the kernel only when neither the
    /// buffer nor an earlier answer shows it.
    fn holds(&mut self, len: u64) -> io::Result<bool> {
        self.known_len = self
            .known_len
            .max(self.pos + (self.end - self.start) as u64);
        Ok(self.known_len >= len || self.file_len()? >= len)
    }

    /// Makes at least `n` unread bytes available if the file has them; false if it does not.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < n.max(CHUNK) {
            self.buf.resize(n.max(CHUNK), 0);
        }
        while self.end < n {
            let read = self
                .file
                .read_at(&mut self.buf[self.end..], self.pos + self.end as u64)?;
            if read == 0 {
                return Ok(false);
            }
            self.end += read;
        }
        Ok(true)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }

    /// Forgets the unread buffered bytes so that the next call reads them from the file again.
    fn unread(&mut self) {
        self.end = self.start;
    }

    /// Reads the frame at the current position, which should hold offset `expected`.
    pub(super) fn next(&mut self, expected: u64) -> io::Result<Next> {
        if self.pos == 0 {
            if !self.fill(MAGIC.len())? {
                let empty = self.end == self.start;
                self.unread();
                return Ok(if empty { Next::End } else { Next::Incomplete });
            }
            if self.buf[self.start..self.start + MAGIC.len()] != MAGIC {
                self.unread();
                let reason = "the segment header is not this format's (GMLOG version 1)".to_owned();
                return Ok(Next::Bad { reason, len: None });
            }
            self.consume(MAGIC.len());
        }
        let mut need = PREFIX_LEN;
        loop {
            if !self.fill(need)? {
                let empty = self.end == self.start;
                self.unread();
                return Ok(if empty { Next::End } else { Next::Incomplete });
            }
            match parse(&self.buf[self.start..self.end]) {
                Parse::Short(len) => need = len,
                Parse::Seal => return Ok(Next::Sealed),
                Parse::Bad { reason, len } => {
                    self.unread();
                    return Ok(Next::Bad {
                        reason,
                        len: len.map(|len| len as u64),
                    });
                }
                Parse::Frame(parsed) if parsed.offset != expected => {
                    self.unread();
                    let reason = format!(
                        "frame holds offset {} where {expected} belongs",
                        parsed.offset
                    );
                    return Ok(Next::Bad {
                        reason,
                        len: Some(parsed.len as u64),
                    });
                }
                Parse::Frame(parsed) => {
                    // A frame counts only once its whole batch is in the file.
                    if !self.holds(self.pos + (parsed.len + parsed.batch_left as usize) as u64)? {
                        self.unread();
                        return Ok(Next::Incomplete);
                    }
                    let at = self.start;
                    self.consume(parsed.len);
                    return Ok(Next::Frame(Frame {
                        offset: parsed.offset,
                        batch_left: parsed.batch_left,
                        schema: parsed.schema,
                        kind: at + parsed.kind.start..at + parsed.kind.end,
                        payload: at + parsed.payload.start..at + parsed.payload.end,
                    }));
                }
            }
        }
    }

    /// The record of the frame [`SegmentReader::next`] just returned.
    pub(super) fn record(&self, frame: &Frame) -> Record {
        Record {
            offset: frame.offset,
            kind: String::from_utf8_lossy(&self.buf[frame.kind.clone()]).into_owned(),
            schema: frame.schema,
            payload: self.buf[frame.payload.clone()].to_vec(),
        }
    }
}

/// Looks for a valid frame holding an offset at or after `expected`, whose whole batch is in
/// `file`, anywhere from byte `from` on. Recovery uses it to tell a torn write (nothing complete
/// follows the damage: a torn batch never holds itself whole) from damage in the middle of the
/// log (acknowledged records follow it).
pub(super) fn valid_frame_from(file: &File, from: u64, expected: u64) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    let mut rest = vec![0; len.saturating_sub(from) as usize];
    file.read_exact_at(&mut rest, from)?;
    Ok((0..rest.len()).find_map(|at| match parse(&rest[at..]) {
        Parse::Frame(parsed)
            if parsed.offset >= expected
                && at + parsed.len + parsed.batch_left as usize <= rest.len() =>
        {
            Some(parsed.offset)
        }
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_parses_back_to_its_record() {
        let record = NewRecord {
            kind: "order_accepted",
            schema: 3,
            payload: b"payload",
        };
        let mut buf = Vec::new();
        encode(&mut buf, 42, 1000, &record);
        assert_eq!(Ok(buf.len()), frame_len(&record));
        let Parse::Frame(parsed) = parse(&buf) else {
            panic!("no frame")
        };
        assert_eq!(
            (parsed.len, parsed.offset, parsed.batch_left, parsed.schema),
            (buf.len(), 42, 1000, 3)
        );
        assert_eq!(&buf[parsed.kind], b"order_accepted");
        assert_eq!(&buf[parsed.payload], b"payload");
    }

    #[test]
    fn damage_anywhere_in_a_frame_is_detected() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            7,
            0,
            &NewRecord {
                kind: "k",
                schema: 1,
                payload: &[9; 20],
            },
        );
        for at in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[at] ^= 0x40;
            assert!(
                !matches!(parse(&damaged), Parse::Frame(_)),
                "flip at byte {at} went unnoticed"
            );
        }
        assert!(matches!(parse(&buf[..buf.len() - 1]), Parse::Short(len) if len == buf.len()));
    }
}
