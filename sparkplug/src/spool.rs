//! Store and forward: where an [`EdgeNode`](crate::EdgeNode) keeps readings
//! while it cannot send them (no broker, or no primary host).
//!
//! A [`Spool`] is a FIFO of opaque records with a read cursor and a commit
//! point, bounded by bytes:
//!
//! ```text
//!   committed (delivered, forgotten) │ read, not yet confirmed │ not yet read
//!  ──────────────────────────────────┼─────────────────────────┼──────────────► push
//!                                 commit                      read
//! ```
//!
//! After a birth the node reads records and sends them as historical DATA.
//! DATA goes out at QoS 0, so nothing acknowledges it: the driver confirms a
//! stretch of records with a round trip through the broker (it subscribes
//! again to a topic it already has and waits for the SUBACK, which the
//! broker sends only after it has read everything before it on the
//! connection), then
//! [`commit`](Spool::commit)s up to the [`mark`](Spool::mark) it took. If the
//! connection drops first, [`rewind`](Spool::rewind) makes the unconfirmed
//! records readable again: delivery is at least once, never silently lost.
//!
//! When the bytes bound is reached, the oldest records are dropped first and
//! every dropped reading is counted ([`Spool::dropped`]).
//!
//! Two stores come with the crate: [`MemorySpool`] (the default) and
//! [`FileSpool`], which keeps segments on disk so that a gateway survives a
//! restart as well as a long broker outage.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Bytes of framing per record, counted against the bound.
pub const RECORD_OVERHEAD: u64 = 12;
/// The largest record a spool accepts (a bigger length on disk is corruption).
pub const MAX_RECORD: usize = 64 << 20;

/// A position in a spool: everything read before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolMark(u64);

/// A spool that failed. The message names the file and the operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: cannot {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`open`, `append to`, …).
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process holds the spool directory.
    #[error(
        "spool {0}: in use by another process (one edge node per spool directory; stop the other one or use another directory)"
    )]
    Locked(PathBuf),
    /// A record read back does not match what was written.
    #[error(
        "spool {path}: record at byte {offset} is corrupt ({why}); the rest of the segment is skipped"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
}

/// Where an edge node keeps what it could not send. See the [module
/// docs](self) for the protocol.
pub trait Spool: Send + fmt::Debug {
    /// Appends a record holding `readings` readings. Returns how many
    /// readings were dropped to make room (the oldest first; a record larger
    /// than the whole bound drops itself).
    fn push(&mut self, record: &[u8], readings: u32) -> Result<u64, SpoolError>;
    /// The next record after the read cursor and its reading count.
    fn read(&mut self) -> Result<Option<(Bytes, u32)>, SpoolError>;
    /// The read cursor, to [`commit`](Self::commit) once confirmed.
    fn mark(&self) -> SpoolMark;
    /// Forgets every record read before `mark`: they were delivered.
    fn commit(&mut self, mark: SpoolMark) -> Result<(), SpoolError>;
    /// Moves the read cursor back to the commit point (the connection is gone;
    /// what was read and not confirmed is read again).
    fn rewind(&mut self);
    /// Readings not yet committed.
    fn readings(&self) -> u64;
    /// Bytes held, framing included. (A file spool frees a segment's bytes
    /// once all of it is delivered.)
    fn bytes(&self) -> u64;
    /// Readings dropped since the spool was opened.
    fn dropped(&self) -> u64;
    /// Makes what was pushed and committed durable (fsync). The driver calls
    /// it about once a second.
    fn sync(&mut self) -> Result<(), SpoolError> {
        Ok(())
    }
}

/// A spool in memory: lost on restart. Bounded by bytes like the others.
#[derive(Debug)]
pub struct MemorySpool {
    max_bytes: u64,
    /// Index of `records[0]`.
    front: u64,
    records: VecDeque<(Bytes, u32)>,
    /// Position of the read cursor in `records`.
    read: usize,
    bytes: u64,
    readings: u64,
    dropped: u64,
}

impl MemorySpool {
    /// An empty spool holding at most `max_bytes` (each record counts its
    /// length plus [`RECORD_OVERHEAD`]).
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            front: 0,
            records: VecDeque::new(),
            read: 0,
            bytes: 0,
            readings: 0,
            dropped: 0,
        }
    }

    fn pop_front(&mut self) -> Option<(Bytes, u32)> {
        let r = self.records.pop_front()?;
        self.front += 1;
        self.read = self.read.saturating_sub(1);
        self.bytes -= r.0.len() as u64 + RECORD_OVERHEAD;
        self.readings -= u64::from(r.1);
        Some(r)
    }
}

impl Spool for MemorySpool {
    fn push(&mut self, record: &[u8], readings: u32) -> Result<u64, SpoolError> {
        let size = record.len() as u64 + RECORD_OVERHEAD;
        if size > self.max_bytes {
            self.dropped += u64::from(readings);
            return Ok(readings.into());
        }
        let mut dropped = 0;
        while self.bytes + size > self.max_bytes {
            let Some((_, n)) = self.pop_front() else { break };
            dropped += u64::from(n);
        }
        self.records.push_back((Bytes::copy_from_slice(record), readings));
        self.bytes += size;
        self.readings += u64::from(readings);
        self.dropped += dropped;
        Ok(dropped)
    }

    fn read(&mut self) -> Result<Option<(Bytes, u32)>, SpoolError> {
        let r = self.records.get(self.read).cloned();
        if r.is_some() {
            self.read += 1;
        }
        Ok(r)
    }

    fn mark(&self) -> SpoolMark {
        SpoolMark(self.front + self.read as u64)
    }

    fn commit(&mut self, mark: SpoolMark) -> Result<(), SpoolError> {
        while self.front < mark.0 && self.read > 0 {
            self.pop_front();
        }
        Ok(())
    }

    fn rewind(&mut self) {
        self.read = 0;
    }

    fn readings(&self) -> u64 {
        self.readings
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// One segment file: records `first..first + records`.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    records: u64,
    readings: u64,
    bytes: u64,
}

/// What [`FileSpool::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segment files found.
    pub segments: usize,
    /// Readings waiting to be sent.
    pub readings: u64,
    /// Bytes cut off the end of segments because they did not check out (a
    /// write torn by a crash or power loss, or damage). The readings in them
    /// are lost.
    pub truncated_bytes: u64,
}

/// A spool in segment files under one directory: survives a restart (and,
/// after [`sync`](Spool::sync), a power loss).
///
/// Records are appended to the newest segment (`<first index>.seg`); a
/// segment is at most an eighth of the bound, so that dropping the oldest
/// segment frees room without dropping much more than needed. Each record is
/// framed `length · readings · CRC-32 · bytes`; [`open`](Self::open)
/// checks every frame and cuts a torn tail off. The commit point lives in
/// `cursor`. The directory is locked while the spool is open.
#[derive(Debug)]
pub struct FileSpool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending.
    writer: Option<File>,
    next_index: u64,
    /// Everything before this index is delivered.
    commit_index: u64,
    /// The commit point's byte offset in the front segment.
    commit_offset: u64,
    /// Readings of the front segment before the commit point.
    commit_readings: u64,
    read_index: u64,
    /// The segment (by first index) and offset of the read cursor.
    read_segment: u64,
    read_offset: u64,
    reader: Option<(u64, File)>,
    /// Records read and not committed: (index, frame bytes, readings).
    inflight: VecDeque<(u64, u64, u32)>,
    bytes: u64,
    readings: u64,
    dropped: u64,
    cursor: File,
    _lock: File,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io { path: path.to_owned(), op, source }
}

fn frame_header(record: &[u8], readings: u32) -> [u8; 12] {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&readings.to_le_bytes());
    crc.update(record);
    let mut h = [0; 12];
    h[..4].copy_from_slice(&(record.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&readings.to_le_bytes());
    h[8..].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Checks the frame at the start of `buf`: `Ok((frame bytes, readings))`.
fn check_frame(buf: &[u8]) -> Result<(usize, u32), &'static str> {
    let Some(h) = buf.get(..12) else { return Err("torn header") };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let readings = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len > MAX_RECORD {
        return Err("impossible length");
    }
    let Some(body) = buf.get(12..12 + len) else { return Err("torn record") };
    let mut c = crc32fast::Hasher::new();
    c.update(&readings.to_le_bytes());
    c.update(body);
    if c.finalize() != crc {
        return Err("checksum mismatch");
    }
    Ok((12 + len, readings))
}

impl FileSpool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`.
    /// Every record on disk is checked; a torn tail is cut off and reported.
    /// A bound smaller than last time drops the oldest segments at once
    /// (but not the only one: a segment is dropped whole).
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> Result<(Self, OpenReport), SpoolError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_err(&dir, "create the directory"))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, "lock")(e)),
        }
        let cursor_path = dir.join("cursor");
        let mut cursor = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&cursor_path)
            .map_err(io_err(&cursor_path, "open"))?;
        let mut c = [0_u8; 16];
        let commit_index = match cursor.read_exact(&mut c) {
            Ok(()) => {
                let index = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
                let check = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
                // A damaged cursor means "nothing delivered": resend, never lose.
                if check == !index { index } else { 0 }
            }
            Err(_) => 0,
        };

        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir, "list"))? {
            let entry = entry.map_err(io_err(&dir, "list"))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((first, entry.path()));
        }
        names.sort();

        let mut report = OpenReport::default();
        let mut segments = VecDeque::new();
        let (mut commit_offset, mut commit_readings) = (0, 0);
        let mut commit_index = commit_index;
        for (first, path) in names {
            let data = fs::read(&path).map_err(io_err(&path, "read"))?;
            let (mut offset, mut records, mut readings) = (0, 0, 0);
            while offset < data.len() {
                if first + records == commit_index {
                    commit_offset = offset as u64;
                    commit_readings = readings;
                }
                match check_frame(&data[offset..]) {
                    Ok((len, n)) => {
                        offset += len;
                        records += 1;
                        readings += u64::from(n);
                    }
                    Err(_) => break,
                }
            }
            if offset < data.len() {
                report.truncated_bytes += (data.len() - offset) as u64;
                let f =
                    OpenOptions::new().write(true).open(&path).map_err(io_err(&path, "open"))?;
                f.set_len(offset as u64).map_err(io_err(&path, "truncate"))?;
            }
            let seg = Segment { first, path, records, readings, bytes: offset as u64 };
            if records == 0 || first + records <= commit_index {
                fs::remove_file(&seg.path).map_err(io_err(&seg.path, "remove"))?;
                continue;
            }
            if segments.is_empty() && commit_index < first {
                // The commit point is in a segment that is gone.
                commit_index = first;
                commit_offset = 0;
                commit_readings = 0;
            }
            segments.push_back(seg);
        }
        if segments.is_empty() {
            commit_offset = 0;
            commit_readings = 0;
        }
        let next_index = segments.back().map_or(commit_index, |s: &Segment| s.first + s.records);
        let writer = match segments.back() {
            Some(s) => Some(
                OpenOptions::new().append(true).open(&s.path).map_err(io_err(&s.path, "open"))?,
            ),
            None => None,
        };
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let readings = segments.iter().map(|s| s.readings).sum::<u64>() - commit_readings;
        report.segments = segments.len();
        report.readings = readings;
        let read_segment = segments.front().map_or(next_index, |s| s.first);
        let mut spool = Self {
            dir,
            max_bytes,
            segment_bytes: (max_bytes / 8).max(512),
            segments,
            writer,
            next_index,
            commit_index,
            commit_offset,
            commit_readings,
            read_index: commit_index,
            read_segment,
            read_offset: commit_offset,
            reader: None,
            inflight: VecDeque::new(),
            bytes,
            readings,
            dropped: 0,
            cursor,
            _lock: lock,
        };
        spool.write_cursor()?;
        // A smaller bound than last time applies at once.
        spool.enforce_bound()?;
        Ok((spool, report))
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_cursor(&mut self) -> Result<(), SpoolError> {
        let mut c = [0_u8; 16];
        c[..8].copy_from_slice(&self.commit_index.to_le_bytes());
        c[8..].copy_from_slice(&(!self.commit_index).to_le_bytes());
        let path = self.dir.join("cursor");
        self.cursor.seek(SeekFrom::Start(0)).map_err(io_err(&path, "write"))?;
        self.cursor.write_all(&c).map_err(io_err(&path, "write"))
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.seg"))
    }

    /// Drops the oldest segment; counts its readings not yet delivered.
    fn drop_front(&mut self) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.pop_front() else { return Ok(()) };
        let end = seg.first + seg.records;
        let lost = seg.readings - self.commit_readings;
        self.dropped += lost;
        self.readings -= lost;
        self.bytes -= seg.bytes;
        self.commit_index = self.commit_index.max(end);
        self.commit_offset = 0;
        self.commit_readings = 0;
        if self.read_segment <= seg.first {
            self.read_index = self.read_index.max(end);
            self.read_segment = self.segments.front().map_or(self.next_index, |s| s.first);
            self.read_offset = 0;
            self.reader = None;
        }
        self.inflight.retain(|&(i, _, _)| i >= end);
        if self.segments.is_empty() {
            self.writer = None;
        }
        fs::remove_file(&seg.path).map_err(io_err(&seg.path, "remove"))?;
        self.write_cursor()
    }

    fn enforce_bound(&mut self) -> Result<u64, SpoolError> {
        let before = self.dropped;
        while self.bytes > self.max_bytes && self.segments.len() > 1 {
            self.drop_front()?;
        }
        Ok(self.dropped - before)
    }
}

impl Spool for FileSpool {
    fn push(&mut self, record: &[u8], readings: u32) -> Result<u64, SpoolError> {
        let size = record.len() as u64 + RECORD_OVERHEAD;
        if size > self.max_bytes || record.len() > MAX_RECORD {
            self.dropped += u64::from(readings);
            return Ok(readings.into());
        }
        let rotate = match self.segments.back() {
            None => true,
            Some(s) => s.bytes > 0 && s.bytes + size > self.segment_bytes,
        };
        if rotate || self.writer.is_none() {
            let path = self.segment_path(self.next_index);
            let f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path, "create"))?;
            self.writer = Some(f);
            if self.segments.is_empty() {
                self.read_segment = self.next_index;
                self.read_offset = 0;
            }
            self.segments.push_back(Segment {
                first: self.next_index,
                path,
                records: 0,
                readings: 0,
                bytes: 0,
            });
        }
        let (Some(seg), Some(w)) = (self.segments.back_mut(), self.writer.as_mut()) else {
            unreachable!("a segment was just ensured")
        };
        let mut frame = Vec::with_capacity(size as usize);
        frame.extend_from_slice(&frame_header(record, readings));
        frame.extend_from_slice(record);
        if let Err(e) = w.write_all(&frame) {
            // Leave no torn frame behind for the next append.
            let _ = w.set_len(seg.bytes);
            return Err(io_err(&seg.path, "append to")(e));
        }
        seg.records += 1;
        seg.readings += u64::from(readings);
        seg.bytes += size;
        self.bytes += size;
        self.readings += u64::from(readings);
        self.next_index += 1;
        self.enforce_bound()
    }

    fn read(&mut self) -> Result<Option<(Bytes, u32)>, SpoolError> {
        loop {
            let Some(pos) = self.segments.iter().position(|s| s.first == self.read_segment) else {
                return Ok(None);
            };
            let (first, seg_bytes) = (self.segments[pos].first, self.segments[pos].bytes);
            if self.read_offset >= seg_bytes {
                match self.segments.get(pos + 1) {
                    Some(next) => {
                        self.read_segment = next.first;
                        self.read_index = next.first;
                        self.read_offset = 0;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let path = self.segments[pos].path.clone();
            if self.reader.as_ref().is_none_or(|(f, _)| *f != first) {
                let f = File::open(&path).map_err(io_err(&path, "open"))?;
                self.reader = Some((first, f));
            }
            let Some((_, f)) = self.reader.as_mut() else { unreachable!("just opened") };
            let offset = self.read_offset;
            let mut header = [0_u8; 12];
            f.seek(SeekFrom::Start(offset)).map_err(io_err(&path, "read"))?;
            f.read_exact(&mut header).map_err(io_err(&path, "read"))?;
            let body_len =
                u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let checked = if (body_len as u64).saturating_add(12) > seg_bytes - offset {
                Err("length past the end")
            } else {
                let mut buf = vec![0_u8; 12 + body_len];
                buf[..12].copy_from_slice(&header);
                f.read_exact(&mut buf[12..]).map_err(io_err(&path, "read"))?;
                check_frame(&buf).map(|(frame, readings)| (buf, frame, readings))
            };
            match checked {
                Ok((buf, frame, readings)) => {
                    self.inflight.push_back((self.read_index, frame as u64, readings));
                    self.read_index += 1;
                    self.read_offset += frame as u64;
                    return Ok(Some((Bytes::from(buf).slice(12..), readings)));
                }
                Err(why) => {
                    // Skip the rest of the segment; the next read goes on after it.
                    self.read_offset = seg_bytes;
                    return Err(SpoolError::Corrupt { path, offset, why });
                }
            }
        }
    }

    fn mark(&self) -> SpoolMark {
        SpoolMark(self.read_index)
    }

    fn commit(&mut self, mark: SpoolMark) -> Result<(), SpoolError> {
        let mut moved = false;
        while let Some(&(index, frame, readings)) = self.inflight.front() {
            if index >= mark.0 {
                break;
            }
            self.inflight.pop_front();
            let Some(front) = self.segments.front() else { break };
            if index < front.first {
                continue;
            }
            moved = true;
            self.commit_index = index + 1;
            self.commit_offset += frame;
            self.commit_readings += u64::from(readings);
            self.readings -= u64::from(readings);
            if self.commit_offset >= front.bytes {
                // The whole segment is delivered.
                let seg = self.segments.pop_front().expect("front exists");
                self.bytes -= seg.bytes;
                self.commit_offset = 0;
                self.commit_readings = 0;
                if self.read_segment == seg.first {
                    // The reader was at the end of it: on to the next one.
                    self.read_segment = self.segments.front().map_or(self.next_index, |s| s.first);
                    self.read_index = self.read_index.max(self.read_segment);
                    self.read_offset = 0;
                    self.reader = None;
                }
                if self.segments.is_empty() {
                    self.writer = None;
                }
                fs::remove_file(&seg.path).map_err(io_err(&seg.path, "remove"))?;
            }
        }
        if moved { self.write_cursor() } else { Ok(()) }
    }

    fn rewind(&mut self) {
        self.inflight.clear();
        self.read_index = self.commit_index;
        self.read_segment = self.segments.front().map_or(self.next_index, |s| s.first);
        self.read_offset = self.commit_offset;
    }

    fn readings(&self) -> u64 {
        self.readings
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn sync(&mut self) -> Result<(), SpoolError> {
        if let (Some(w), Some(s)) = (&self.writer, self.segments.back()) {
            w.sync_data().map_err(io_err(&s.path, "sync"))?;
        }
        self.cursor.sync_data().map_err(io_err(&self.dir.join("cursor"), "sync"))
    }
}
