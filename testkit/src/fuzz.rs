//! Replaying the inputs `scripts/fuzz` keeps.

use std::path::Path;

/// Runs `check(target, input)` on every input kept in
/// `<crate_dir>/tests/fuzz/<target>/` (where `scripts/fuzz` copies each
/// crash) and returns how many there were. Panics, naming the file, when a
/// check fails again, and when a folder names no target of `targets`.
pub fn replay_fuzz_inputs(
    crate_dir: &Path,
    targets: &[&str],
    check: impl Fn(&str, &[u8]) + std::panic::RefUnwindSafe,
) -> usize {
    let root = crate_dir.join("tests/fuzz");
    let mut n = 0;
    let dirs = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/fuzz keeps crashes there)", root.display()));
    for dir in dirs.flatten() {
        let dir = dir.path();
        let target = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        assert!(
            targets.contains(&target.as_str()),
            "{}: no fuzz target {target:?}; the targets are {targets:?}",
            dir.display()
        );
        let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for file in files.flatten() {
            let file = file.path();
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| check(&target, &data));
            assert!(outcome.is_ok(), "{} fails fuzz target {target} again", file.display());
            n += 1;
        }
    }
    n
}
