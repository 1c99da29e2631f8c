//! Helpers shared by the testkit tests.

use std::time::{Duration, Instant};

use shopfloor_testkit::Error;

/// Asserts that `error` says package `name` is not installed, in these words.
pub(crate) fn assert_not_installed(error: &Error, name: &str, message: &str) {
    assert!(matches!(error, Error::NotInstalled { name: n, .. } if *n == name), "{error:?}");
    assert_eq!(error.to_string(), message);
}

/// Asserts that a server dies with the test process that started it, also
/// when that process is SIGKILLed and no `Drop` runs. The test named `test`
/// runs itself again as a child process with `env` set; there `start` starts
/// the server and gives its pid, and the child waits to be killed.
pub(crate) fn assert_server_dies_with_test_process<S>(
    test: &str,
    env: &str,
    start: impl FnOnce() -> (S, u32),
) {
    if std::env::var_os(env).is_some() {
        let (_server, pid) = start();
        println!("SERVER_PID {pid}");
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0]);
        return;
    }
    assert_dies(kill_child_test_process(test, env));
}

/// Runs one test of this binary in a child process with `env` set, reads the
/// `SERVER_PID` it prints, SIGKILLs the child (no `Drop` runs) and returns the pid.
fn kill_child_test_process(test: &str, env: &str) -> u32 {
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

/// Asserts that a process dies (exits, or is a zombie: reaping it is up to
/// whoever adopted it) within 10 s. Waits on a pidfd, which becomes readable
/// when the process terminates: an event, not a polling loop.
fn assert_dies(pid: u32) {
    let raw = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        // ESRCH: the process is already gone (and reaped).
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ESRCH),
            "pidfd_open({pid})"
        );
        return;
    }
    let fd = i32::try_from(fd).expect("an fd fits i32");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, and its count.
        let n = unsafe { libc::poll(&mut pollfd, 1, ms) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break n > 0;
        }
    };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    assert!(ready, "server {pid} survived its test process");
}
