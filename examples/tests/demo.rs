//! `shopfloor-demo` against a real Mosquitto: every codec's messages come back
//! decoded, and the deliberately malformed payload is refused, not fatal.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use shopfloor_testkit::Mosquitto;

#[test]
fn demo_round_trips_all_three_codecs_through_mosquitto() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let child = Command::new(env!("CARGO_BIN_EXE_shopfloor-demo"))
        .args(["--port", &broker.port().to_string(), "--rate", "20", "--duration", "3", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shopfloor-demo");
    // Wait for the exit on another thread, so the test can give up at a deadline.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("shopfloor-demo did not stop within 60 s of a 3 s run")
        .expect("wait for shopfloor-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(
        stdout.contains(r#"codecs decoded: {"cbor", "json", "protobuf"}"#),
        "stdout:\n{stdout}"
    );
    assert!(stdout.contains("1 malformed payloads refused"), "stdout:\n{stdout}");
    assert!(stdout.contains("JSON payload malformed at line 1"), "stdout:\n{stdout}");
    for topic in ["press-1/temperature", "press-2/pressure", "press-3/cycles"] {
        assert!(
            stdout.contains(&format!("shopfloor/plant1/press/{topic}")),
            "{topic} missing:\n{stdout}"
        );
    }
}

#[test]
fn demo_help_and_bad_arguments() {
    let help = Command::new(env!("CARGO_BIN_EXE_shopfloor-demo")).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("EXAMPLES:"));
    let bad = Command::new(env!("CARGO_BIN_EXE_shopfloor-demo"))
        .args(["--rate", "fast"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--rate"), "{bad:?}");
}
