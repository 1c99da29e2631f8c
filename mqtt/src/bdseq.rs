//! `bdSeq` across restarts: Sparkplug wants it incremented on every
//! CONNECT (the host matches an NDEATH to its NBIRTH by it), and a
//! gateway that starts again at 0 could have its new session taken for
//! the old one's death. The last value used is kept in a small file
//! (`bdseq` in the spool or state folder), written before each CONNECT.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in its folder.
pub const FILE_NAME: &str = "bdseq";

/// The `bdSeq` the next session should use, from the file in `dir`: one
/// more than the last used (wrapping at 256), 0 when there is none. An
/// unreadable or damaged file counts as none, with a warning: a wrong
/// `bdSeq` costs a host one mismatched death, a refusal to start costs
/// the plant its data.
pub fn next(dir: &Path) -> u8 {
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u8>() {
            Ok(last) => last.wrapping_add(1),
            Err(_) => {
                tracing::warn!(
                    "{}: not a bdSeq ({:?}); starting again at 0",
                    path.display(),
                    text.trim()
                );
                0
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!("{}: {e}; bdSeq starts again at 0", path.display());
            0
        }
    }
}

/// Writes `bd_seq` as the last used, atomically (a temporary file renamed
/// over the old one, both synced), so that a crash leaves the old value
/// or the new, never a torn one.
pub fn store(path: &Path, bd_seq: u8) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{bd_seq}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself, durable (a directory fsync; best effort).
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_session_continues_where_the_last_one_stopped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next(dir.path()), 0, "no file: 0");
        let path = dir.path().join(FILE_NAME);
        store(&path, 41).unwrap();
        assert_eq!(next(dir.path()), 42);
        store(&path, 255).unwrap();
        assert_eq!(next(dir.path()), 0, "wraps at 256");
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(next(dir.path()), 0, "a damaged file is no file");
        assert!(!path.with_extension("tmp").exists());
    }
}
