//! Helpers shared by the testkit tests.

use std::time::{Duration, Instant};

/// Runs one test of this binary in a child process with `env` set, reads the
/// `SERVER_PID` it prints, SIGKILLs the child (no `Drop` runs) and returns the pid.
pub(crate) fn kill_child_test_process(test: &str, env: &str) -> u32 {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let pid = stdout
        .lines()
        .map_while(Result::ok)
        // The harness prints "test NAME ... " before the test's own output.
        .find_map(|line| Some(line.split_once("SERVER_PID ")?.1.trim().parse::<u32>().unwrap()));
    child.kill().unwrap();
    child.wait().unwrap();
    pid.expect("the child test process printed no SERVER_PID")
}

/// Asserts that a process is gone or a zombie (dead; reaping it is up to
/// whoever adopted it) within 10 s.
pub(crate) fn assert_dies(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()))
            .flatten();
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        assert!(Instant::now() < deadline, "server {pid} survived its test process");
        std::thread::sleep(Duration::from_millis(5));
    }
}
