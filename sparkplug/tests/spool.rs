//! The store-and-forward spools: the memory and file spools keep one
//! protocol (push, read, mark, commit, rewind) checked against a model; the
//! file spool survives reopening, torn writes and damage, and keeps its bound.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;
use shopfloor_sparkplug::spool::{FileSpool, MemorySpool, RECORD_OVERHEAD, Spool, SpoolError};

fn record(i: u32) -> Vec<u8> {
    format!("record {i:04}").into_bytes()
}

fn read_all(s: &mut dyn Spool) -> Vec<(Vec<u8>, u32)> {
    std::iter::from_fn(|| s.read().unwrap()).map(|(b, n)| (b.to_vec(), n)).collect()
}

/// Pushes `records`, one reading each.
fn push_records(s: &mut dyn Spool, records: std::ops::Range<u32>) {
    for i in records {
        s.push(&record(i), 1).unwrap();
    }
}

/// The records read from the cursor on, without their reading counts.
fn read_records(s: &mut dyn Spool) -> Vec<Vec<u8>> {
    read_all(s).into_iter().map(|(b, _)| b).collect()
}

fn both(max_bytes: u64) -> Vec<(Box<dyn Spool>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = FileSpool::open(dir.path(), max_bytes).unwrap();
    vec![(Box::new(MemorySpool::new(max_bytes)), None), (Box::new(file), Some(dir))]
}

#[test]
fn records_come_back_in_order_until_committed() {
    for (mut s, _dir) in both(1 << 20) {
        for i in 0..5 {
            assert_eq!(s.push(&record(i), i + 1).unwrap(), 0);
        }
        assert_eq!(s.readings(), 15);
        assert_eq!(s.bytes(), 5 * (11 + RECORD_OVERHEAD));
        let first = read_all(&mut *s);
        assert_eq!(first, (0..5).map(|i| (record(i), i + 1)).collect::<Vec<_>>());
        // The connection dropped before any confirmation: all of it again.
        s.rewind();
        s.read().unwrap().unwrap();
        s.read().unwrap().unwrap();
        let mark = s.mark();
        s.read().unwrap().unwrap();
        s.commit(mark).unwrap();
        assert_eq!(s.readings(), 15 - 1 - 2, "{s:?}");
        s.rewind();
        assert_eq!(read_all(&mut *s).len(), 3, "{s:?}");
        s.commit(s.mark()).unwrap();
        assert_eq!((s.readings(), s.bytes(), s.dropped()), (0, 0, 0), "{s:?}");
        assert!(s.read().unwrap().is_none());
        // Still usable when emptied.
        s.push(&record(9), 1).unwrap();
        assert_eq!(read_all(&mut *s), [(record(9), 1)]);
    }
}

#[test]
fn the_oldest_are_dropped_at_the_bound_and_counted() {
    let size = 11 + RECORD_OVERHEAD;
    // Memory: exactly 4 records fit.
    let mut m = MemorySpool::new(4 * size);
    let dropped: u64 = (0..10).map(|i| m.push(&record(i), 2).unwrap()).sum();
    assert_eq!((dropped, m.dropped(), m.readings()), (12, 12, 8));
    let kept = read_records(&mut m);
    assert_eq!(kept, (6..10).map(record).collect::<Vec<_>>());

    // File: segments of an eighth of the bound (at least 512 bytes) are
    // dropped whole, oldest first, and every reading in them counted.
    let dir = tempfile::tempdir().unwrap();
    let (mut f, _) = FileSpool::open(dir.path(), 4096).unwrap();
    let mut dropped = 0;
    for i in 0..1000 {
        dropped += f.push(&record(i), 2).unwrap();
        assert!(f.bytes() <= 4096, "over the bound after record {i}: {}", f.bytes());
    }
    assert!(dropped > 0);
    assert_eq!(dropped, f.dropped());
    assert_eq!(dropped + f.readings(), 2000, "every reading is kept or counted");
    let kept = read_records(&mut f);
    let first = 1000 - kept.len() as u32;
    assert_eq!(kept, (first..1000).map(record).collect::<Vec<_>>(), "the newest are kept");
}

#[test]
fn a_record_larger_than_the_bound_drops_itself() {
    for (mut s, _dir) in both(64) {
        assert_eq!(s.push(&[0; 100], 3).unwrap(), 3);
        assert_eq!((s.readings(), s.dropped()), (0, 3));
        assert!(s.read().unwrap().is_none());
    }
}

#[test]
fn dropping_the_segment_being_read_moves_the_reader_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, _) = FileSpool::open(dir.path(), 4096).unwrap();
    push_records(&mut f, 0..10);
    assert_eq!(f.read().unwrap().unwrap().0, record(0));
    let mark = f.mark();
    push_records(&mut f, 10..1000);
    // The read record was dropped with its segment: its confirmation
    // changes nothing, and reading goes on with the oldest kept.
    f.commit(mark).unwrap();
    assert_eq!(f.dropped() + f.readings(), 1000);
    let next = f.read().unwrap().unwrap().0;
    assert_eq!(next, record(1000 - f.readings() as u32));
}

#[test]
fn a_file_spool_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut f, report) = FileSpool::open(dir.path(), 16 << 10).unwrap();
        assert_eq!(report.readings, 0);
        push_records(&mut f, 0..300);
        for _ in 0..100 {
            f.read().unwrap().unwrap();
        }
        f.commit(f.mark()).unwrap();
        // Read but not confirmed when the process stops: kept.
        f.read().unwrap().unwrap();
        f.sync().unwrap();
        assert!(segments(dir.path()).len() > 2, "spans several segments");
    }
    let (mut f, report) = FileSpool::open(dir.path(), 16 << 10).unwrap();
    assert_eq!((report.readings, report.truncated_bytes), (200, 0));
    let kept = read_records(&mut f);
    assert_eq!(kept, (100..300).map(record).collect::<Vec<_>>());
    f.commit(f.mark()).unwrap();
    drop(f);
    let (f, report) = FileSpool::open(dir.path(), 16 << 10).unwrap();
    assert_eq!((report.readings, report.segments, f.bytes()), (0, 0, 0));
}

#[test]
fn a_second_process_cannot_open_the_same_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (_f, _) = FileSpool::open(dir.path(), 1 << 20).unwrap();
    let e = FileSpool::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(e, SpoolError::Locked(_)), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A spool opened in `dir` (1 MiB bound) holding records 0..3.
fn three_records(dir: &std::path::Path) -> FileSpool {
    let (mut f, _) = FileSpool::open(dir, 1 << 20).unwrap();
    push_records(&mut f, 0..3);
    f
}

#[test]
fn a_torn_tail_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(three_records(dir.path()));
    // A crash in the middle of the next append: half a frame.
    let seg = segments(dir.path()).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&seg).unwrap();
    file.write_all(&[20, 0, 0, 0, 1, 0, 0]).unwrap();
    drop(file);
    let (mut f, report) = FileSpool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!((report.readings, report.truncated_bytes), (3, 7));
    f.push(&record(3), 1).unwrap();
    let kept = read_records(&mut f);
    assert_eq!(kept, (0..4).map(record).collect::<Vec<_>>());
}

#[test]
fn a_damaged_record_and_what_follows_it_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    drop(three_records(dir.path()));
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = (11 + RECORD_OVERHEAD) as usize;
    bytes[second + 14] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let (mut f, report) = FileSpool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!((report.readings, report.truncated_bytes), (1, 2 * second as u64));
    assert_eq!(read_all(&mut f), [(record(0), 1)]);
}

#[test]
fn a_damaged_cursor_means_nothing_was_delivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut f = three_records(dir.path());
        f.read().unwrap();
        f.commit(f.mark()).unwrap();
    }
    std::fs::write(dir.path().join("cursor"), b"garbage garbage!").unwrap();
    let (mut f, report) = FileSpool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(report.readings, 3, "resent rather than lost");
    assert_eq!(read_all(&mut f).len(), 3);
}

#[test]
fn a_smaller_bound_on_reopening_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (mut f, _) = FileSpool::open(dir.path(), 16384).unwrap();
        push_records(&mut f, 0..1000);
        assert!(f.bytes() > 8192);
        f.readings()
    };
    let (mut f, _) = FileSpool::open(dir.path(), 8192).unwrap();
    assert!(f.bytes() <= 8192);
    assert!(f.dropped() > 0);
    assert_eq!(f.dropped() + f.readings(), before);
    assert_eq!(read_all(&mut f).last().unwrap().0, record(999));
}

#[test]
fn files_that_are_not_the_spools_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), b"notes").unwrap();
    std::fs::write(dir.path().join("x.seg"), b"not a number").unwrap();
    let (mut f, report) = FileSpool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(report.segments, 0);
    f.push(&record(1), 1).unwrap();
    assert!(dir.path().join("README").exists() && dir.path().join("x.seg").exists());
}

#[derive(Clone, Debug)]
enum Op {
    Push(u8, u32),
    Read,
    Mark,
    Commit,
    Rewind,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0..5_u32).prop_map(|(len, n)| Op::Push(len, n)),
        4 => Just(Op::Read),
        1 => Just(Op::Mark),
        1 => Just(Op::Commit),
        1 => Just(Op::Rewind),
        1 => Just(Op::Reopen),
    ]
}

/// The spool's promise, as a model: a FIFO with a commit point and a read
/// cursor; nothing is dropped below the bound.
#[derive(Default)]
struct Model {
    records: VecDeque<(Vec<u8>, u32)>,
    read: usize,
}

fn check(ops: &[Op], file: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    // At most 200 records of 255 bytes: never full, but several segments of
    // 8 KiB, so reads and commits cross segment ends.
    let open = || -> Box<dyn Spool> {
        if file {
            Box::new(FileSpool::open(dir.path(), 64 << 10).unwrap().0)
        } else {
            Box::new(MemorySpool::new(64 << 10))
        }
    };
    let mut s = open();
    let mut m = Model::default();
    let mut marks: Vec<(shopfloor_sparkplug::spool::SpoolMark, usize)> = Vec::new();
    let mut pushed = 0_u32;
    for op in ops {
        match op {
            Op::Push(len, n) => {
                let rec: Vec<u8> =
                    pushed.to_le_bytes().iter().copied().cycle().take(*len as usize).collect();
                pushed += 1;
                prop_assert_eq!(s.push(&rec, *n).unwrap(), 0);
                m.records.push_back((rec, *n));
            }
            Op::Read => {
                let got = s.read().unwrap().map(|(b, n)| (b.to_vec(), n));
                let want = m.records.get(m.read).cloned();
                if want.is_some() {
                    m.read += 1;
                }
                prop_assert_eq!(got, want);
            }
            Op::Mark => marks.push((s.mark(), m.read)),
            Op::Commit => {
                if let Some((mark, upto)) = marks.pop() {
                    s.commit(mark).unwrap();
                    // A mark from before a rewind may point past the cursor.
                    let n = upto.min(m.read);
                    m.records.drain(..n);
                    m.read -= n;
                    marks.clear();
                }
            }
            Op::Rewind => {
                s.rewind();
                m.read = 0;
                marks.clear();
            }
            Op::Reopen if file => {
                drop(s);
                s = open();
                m.read = 0;
                marks.clear();
            }
            Op::Reopen => {}
        }
        let readings: u64 = m.records.iter().map(|r| u64::from(r.1)).sum();
        let bytes: u64 = m.records.iter().map(|r| r.0.len() as u64 + RECORD_OVERHEAD).sum();
        prop_assert_eq!((s.readings(), s.dropped()), (readings, 0));
        if file {
            // Delivered records stay on disk until their whole segment is.
            prop_assert!(s.bytes() >= bytes, "{} < {bytes}", s.bytes());
        } else {
            prop_assert_eq!(s.bytes(), bytes);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_memory_spool_keeps_the_protocol(ops in prop::collection::vec(op(), 0..200)) {
        check(&ops, false)?;
    }

    #[test]
    fn the_file_spool_keeps_the_protocol(ops in prop::collection::vec(op(), 0..200)) {
        check(&ops, true)?;
    }

    /// Whatever is on disk, opening never panics, and every record it then
    /// reads is one that checks out.
    #[test]
    fn opening_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000000000.seg"), &bytes).unwrap();
        std::fs::write(dir.path().join("cursor"), &bytes[..bytes.len().min(16)]).unwrap();
        let (mut f, report) = FileSpool::open(dir.path(), 1 << 20).unwrap();
        prop_assert!(report.truncated_bytes <= bytes.len() as u64);
        let n: u64 = read_all(&mut f).iter().map(|r| u64::from(r.1)).sum();
        prop_assert_eq!(n, f.readings());
    }
}

#[test]
fn reading_and_committing_cross_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, _) = FileSpool::open(dir.path(), 64 << 10).unwrap();
    push_records(&mut f, 0..2000);
    assert!(segments(dir.path()).len() > 4, "several segments");
    assert_eq!(f.dropped(), 0);
    let mut got = Vec::new();
    while let Some((b, _)) = f.read().unwrap() {
        got.push(b.to_vec());
        if got.len() % 97 == 0 {
            f.commit(f.mark()).unwrap();
        }
    }
    assert_eq!(got, (0..2000).map(record).collect::<Vec<_>>());
    f.commit(f.mark()).unwrap();
    assert_eq!((f.readings(), f.bytes()), (0, 0));
    assert!(segments(dir.path()).is_empty());
}

#[test]
fn committing_exactly_at_a_segment_end_keeps_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, _) = FileSpool::open(dir.path(), 8 << 10).unwrap();
    push_records(&mut f, 0..300);
    let first_segment = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    let per_segment = first_segment / (11 + RECORD_OVERHEAD);
    // Read exactly the first segment, confirm it: the file goes, the
    // reader goes on with the second.
    for _ in 0..per_segment {
        f.read().unwrap().unwrap();
    }
    f.commit(f.mark()).unwrap();
    assert_eq!(f.read().unwrap().unwrap().0, record(per_segment as u32));
    assert_eq!(f.readings(), 300 - per_segment);
}
