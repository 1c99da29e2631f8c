//! `shopfloor-demo` as a person runs it: the plant comes up, the status
//! shows readings flowing into PostgreSQL, and SIGTERM (as Ctrl-C) stops
//! every process it started.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-demo");

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn the_demo_runs_the_plant_and_sigterm_stops_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let mut child = Command::new(BIN)
        .args(["--plain", "--state"])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shopfloor-demo");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let flowing = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no readings flowing within 90 s; stdout:\n{}", seen.join("\n"));
        };
        seen.push(line.clone());
        // "readings      77/s into PostgreSQL …, 350 so far": a rate above 0.
        let rate = line
            .strip_prefix("readings")
            .and_then(|r| r.trim_start().split('/').next())
            .and_then(|n| n.trim().parse::<f64>().ok());
        if rate.is_some_and(|r| r > 0.0) {
            break line;
        }
    };
    let text = seen.join("\n");
    assert!(text.contains("The plant runs (30 machines, 120 sensors)"), "{text}");
    assert!(text.contains("Alertmanager"), "{text}");
    assert!(text.contains("live page       http://127.0.0.1:"), "{text}");
    assert!(flowing.contains("gateways  modbus-gw online"), "{flowing}");
    assert!(
        !processes_mentioning(&state.display().to_string()).is_empty(),
        "the plant's processes run from the state folder"
    );

    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = done
        .recv_timeout(Duration::from_secs(60))
        .expect("shopfloor-demo did not stop within 60 s of SIGTERM")
        .unwrap();
    assert!(out.status.success(), "exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("stopped")), "{rest:?}");
    let left = processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "still running after the demo stopped: {left:?}");
}

#[test]
fn demo_help_and_bad_arguments() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("EXAMPLES:") && text.contains("--scenario"), "{text}");
    let bad = Command::new(BIN).args(["--duration", "soon"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("'soon'") && err.contains("--duration"), "{err}");
}
