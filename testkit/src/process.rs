//! Child processes, free ports, polling and the per-process scratch folder.
//!
//! Every server is spawned from one long-lived thread (`testkit-spawner`) with
//! `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the *thread*
//! that forked the child exits, not the process: spawning from a test's own
//! thread (or a tokio worker, or a `spawn_blocking` thread that retires after
//! ten idle seconds) would kill the server in the middle of another test. The
//! spawner thread lives until the process ends, so the signal fires exactly
//! when the test process dies, including on SIGKILL, where no `Drop` runs.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};
use std::{mem, ptr, thread};

use crate::Error;

/// How long a server gets to stop after the polite signal before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a server gets to become ready.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many fresh ports a first start tries when another process takes the port
/// between testkit choosing it and the server binding it.
pub(crate) const PORT_ATTEMPTS: usize = 5;

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with [`Error::NotInstalled`] naming `install` unless `path`, the
/// binary of package `name`, is a file.
pub(crate) fn installed(
    name: &'static str,
    path: &Path,
    install: &'static str,
) -> Result<(), Error> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::NotInstalled { name, path: path.to_owned(), install })
    }
}

/// An OS user and group to run a child as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    /// Looks up an OS user by name.
    pub(crate) fn lookup(name: &str) -> Option<Self> {
        let cname = CString::new(name).ok()?;
        // SAFETY: passwd is plain data; all-zero is a valid (empty) value.
        let mut pwd: libc::passwd = unsafe { mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result = ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf's length is passed.
        let rc = unsafe {
            libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
        };
        if rc != 0 || result.is_null() {
            return None;
        }
        Some(Self { uid: pwd.pw_uid, gid: pwd.pw_gid })
    }

    /// Gives a path to this user.
    pub(crate) fn chown(self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(Error::io(format!("chown {}", path.display())))
    }
}

/// A spawned server process. Dropping it does not stop it: owners call
/// [`Proc::stop`] or [`Proc::kill`] from their own `Drop`.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
    /// The child forks workers of its own (PostgreSQL's postmaster), which
    /// [`Proc::kill`] must kill and reap too.
    tree: bool,
}

impl Proc {
    /// Spawns `cmd` from the spawner thread, as `run_as` when given. `tree`
    /// says that the child forks workers that must be killed with it.
    pub(crate) fn spawn(mut cmd: Command, run_as: Option<RunAs>, tree: bool) -> io::Result<Self> {
        // SAFETY: getpid has no preconditions and cannot fail.
        let parent = unsafe { libc::getpid() };
        let setup = move || -> io::Result<()> {
            // Runs in the forked child: only async-signal-safe calls, no allocation.
            // SAFETY: plain system calls on integers and a null list.
            unsafe {
                if let Some(user) = run_as {
                    // Credentials first: changing them clears PDEATHSIG.
                    if libc::setgroups(0, ptr::null()) != 0
                        || libc::setgid(user.gid) != 0
                        || libc::setuid(user.uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    // The test process died between fork and prctl.
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            Ok(())
        };
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(setup);
        }
        if tree {
            become_subreaper();
        }
        let child = spawn_from_spawner_thread(cmd)?;
        Ok(Self { child, exited: None, tree })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the child has exited (and been reaped).
    pub(crate) fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends `signal` and waits up to `grace` for the child to exit, then
    /// kills it with [`Proc::kill`]. Always reaps the child.
    pub(crate) fn stop(&mut self, signal: libc::c_int, grace: Duration) {
        if self.poll_exit().is_some() {
            return;
        }
        // SAFETY: the child is not reaped yet, so its pid still names it.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, signal);
        }
        if poll_until(grace, || self.poll_exit()).is_none() {
            self.kill();
        }
    }

    /// SIGKILLs the child (and, for a tree, every descendant) and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.poll_exit().is_some() {
            return;
        }
        if !self.tree {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
            return;
        }
        let pid = self.pid() as libc::pid_t;
        // PostgreSQL's children call setsid(), so a process group does not
        // hold them. Freeze the parent so that it forks no more, list its
        // descendants, kill them all.
        // SAFETY: the child is not reaped yet, so its pid still names it.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
        let stopped = || matches!(proc_state(pid), Some('T' | 't' | 'Z' | 'X') | None);
        let _ = poll_until(Duration::from_secs(2), || stopped().then_some(()));
        let descendants = descendants(pid);
        // SAFETY: as above; descendants are alive or unreaped (their parent is
        // stopped and cannot reap them), so their pids still name them.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            for &d in &descendants {
                libc::kill(d, libc::SIGKILL);
            }
        }
        self.exited = self.child.wait().ok();
        // The parent is gone: its children now belong to this process (a
        // subreaper), which reaps them.
        let mut left = descendants;
        let _ = poll_until(Duration::from_secs(5), || {
            left.retain(|&d| {
                let mut status = 0;
                // SAFETY: waits for one specific pid that was the server's.
                let reaped = unsafe { libc::waitpid(d, &mut status, libc::WNOHANG) };
                // 0: our child, still dying. -1: not our child (no subreaper,
                // or already reaped); wait until it is at least a zombie.
                reaped == 0 || (reaped < 0 && proc_state(d).is_some_and(|s| s != 'Z'))
            });
            left.is_empty().then_some(())
        });
    }
}

/// A process's state letter from `/proc/PID/stat` (`R`, `S`, `T`, `Z`…).
fn proc_state(pid: libc::pid_t) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Every live descendant of `root`, from `/proc`.
fn descendants(root: libc::pid_t) -> Vec<libc::pid_t> {
    let mut parents = Vec::new(); // (pid, ppid)
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<libc::pid_t>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|&&(_, ppid)| ppid == parent).map(|&(pid, _)| pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// Makes this process adopt orphaned descendants, so that PostgreSQL backends
/// left behind by a SIGKILLed postmaster can be reaped here. (Otherwise they go
/// to PID 1, which in containers often never reaps them.)
fn become_subreaper() {
    // SAFETY: sets a flag of this process; no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    }
}

type SpawnJob = (Command, mpsc::SyncSender<io::Result<Child>>);

/// Spawns on the long-lived spawner thread (see the module doc).
fn spawn_from_spawner_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);
    let sender = {
        let mut guard = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        match &*guard {
            Some(sender) => sender.clone(),
            None => {
                let (sender, jobs) = mpsc::channel::<SpawnJob>();
                thread::Builder::new().name("testkit-spawner".into()).spawn(move || {
                    for (mut cmd, reply) in jobs {
                        let _ = reply.send(cmd.spawn());
                    }
                })?;
                *guard = Some(sender.clone());
                sender
            }
        }
    };
    let (reply, result) = mpsc::sync_channel(1);
    let gone = || io::Error::other("testkit's spawner thread is gone");
    sender.send((cmd, reply)).map_err(|_| gone())?;
    result.recv().map_err(|_| gone())?
}

/// Calls `check` until it returns `Some` or `timeout` passes. The pause between
/// calls starts at 1 ms and grows to 20 ms.
pub(crate) fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// `N` distinct loopback ports that were free a moment ago. Servers bound to
/// them may still lose a race with another process; callers retry.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let mut ports = [0; N];
    for port in &mut ports {
        *port = free_port_below_ephemeral()?;
    }
    Ok(ports)
}

/// Ports handed out by this process: never twice.
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port below the kernel's ephemeral range (`ip_local_port_range`), free
/// when tried and not handed out before by this process.
///
/// `bind(127.0.0.1:0)` picks from the ephemeral range, which is also where
/// every outgoing connection takes its local port: a port found that way
/// and handed to a server to bind a moment later was taken by a client
/// connection in between, now and then (`[metrics] listen =
/// 127.0.0.1:43721: Address already in use` on a fresh machine). Below the
/// range only a listener can take it, and listeners here get their ports
/// from this function.
fn free_port_below_ephemeral() -> Result<u16, Error> {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32_768);
    let (from, to) = if low > 12_000 { (10_000, low) } else { (1_024, low.max(1_025)) };
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    // A different start in every process and call: xorshift from the
    // clock, the pid and what was handed out.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ handed.len() as u64;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = from + (x % u64::from(to - from)) as u16;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed.push(port);
            return Ok(port);
        }
    }
    Err(Error::io("finding a free port below the ephemeral range")(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("1000 tries in {from}..{to}"),
    )))
}

/// The current length of a log file, where this start attempt's lines begin.
pub(crate) fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What a log file gained since `offset`, lossily decoded.
pub(crate) fn log_since(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Opens (creating) a log file for appending, for a child's stdout and stderr.
pub(crate) fn open_log(path: &Path) -> Result<(File, File), Error> {
    let open = || File::options().create(true).append(true).open(path);
    let out = open().map_err(Error::io(format!("opening {}", path.display())))?;
    let err = out.try_clone().map_err(Error::io(format!("opening {}", path.display())))?;
    Ok((out, err))
}

/// This process's scratch folder, `shopfloor-testkit.<pid>.<random>` in
/// `/dev/shm` or the temp dir (see [`scratch_parents`]), with mode 0755, so that servers running as another user can traverse it.
/// Every instance folder and the PostgreSQL template live inside it. It is
/// removed when the process exits normally (`atexit`); folders of test
/// processes that were killed are removed then and when the next test process
/// starts.
pub(crate) fn scratch_dir() -> Result<PathBuf, Error> {
    static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = SCRATCH.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dir) = &*guard {
        return Ok(dir.clone());
    }
    let parents = scratch_parents();
    for parent in &parents {
        remove_stale_scratch_dirs(parent);
    }
    let prefix = format!("{SCRATCH_PREFIX}{}.", std::process::id());
    let mut created = Err(io::Error::other("no temporary folder"));
    for parent in &parents {
        created = tempfile::Builder::new().prefix(&prefix).tempdir_in(parent);
        if created.is_ok() {
            break;
        }
    }
    let dir =
        created.map_err(Error::io("creating testkit's scratch folder in the temp dir"))?.keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(Error::io(format!("chmod 0755 {}", dir.display())))?;
    *guard = Some(dir.clone());
    drop(guard);
    extern "C" fn remove_scratch_dir() {
        let dir = SCRATCH.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(dir) = dir {
            let _ = fs::remove_dir_all(dir);
        }
        // Also those of test processes that died meanwhile (a killed child test).
        for parent in scratch_parents() {
            remove_stale_scratch_dirs(&parent);
        }
    }
    // SAFETY: registers a function that takes no arguments; it only removes files.
    unsafe {
        libc::atexit(remove_scratch_dir);
    }
    Ok(dir)
}

const SCRATCH_PREFIX: &str = "shopfloor-testkit.";

/// Where the scratch folder may go, best first: `/dev/shm` when `TMPDIR` is
/// not set and it is a tmpfs with at least 1 GiB free (a PostgreSQL data
/// directory copies about five times faster there than to disk), then the
/// temp dir.
fn scratch_parents() -> Vec<PathBuf> {
    let shm = Path::new("/dev/shm");
    let mut parents = Vec::new();
    if std::env::var_os("TMPDIR").is_none() && is_roomy_tmpfs(shm) {
        parents.push(shm.to_owned());
    }
    parents.push(std::env::temp_dir());
    parents
}

#[allow(clippy::useless_conversion, reason = "statfs field types differ between targets")]
fn is_roomy_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs is plain data; all-zero is a valid value.
    let mut stat: libc::statfs = unsafe { mem::zeroed() };
    // SAFETY: a valid C string and a valid out pointer.
    if unsafe { libc::statfs(cpath.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    let free = u64::try_from(stat.f_bavail).unwrap_or(0) * u64::try_from(stat.f_bsize).unwrap_or(0);
    i64::try_from(stat.f_type).is_ok_and(|t| t == TMPFS_MAGIC) && free >= 1 << 30
}

/// Removes scratch folders in `parent` whose test process no longer exists.
fn remove_stale_scratch_dirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        // SAFETY: geteuid has no preconditions; kill with signal 0 only checks.
        let (ours, dead) = unsafe {
            (
                meta.is_dir() && meta.uid() == libc::geteuid(),
                pid > 0
                    && libc::kill(pid, 0) != 0
                    && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH),
            )
        };
        if ours && dead {
            for instance in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                if instance.file_name().to_string_lossy().starts_with("postgres-") {
                    crate::postgres::release_shared_memory(&instance.path().join("data"));
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A private folder for one server instance inside the scratch folder, mode 0711
/// (a server running as another user may traverse it, not list it).
pub(crate) fn instance_dir(prefix: &str) -> Result<tempfile::TempDir, Error> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_dir()?)
        .map_err(Error::io("creating an instance folder"))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
        .map_err(Error::io(format!("chmod 0711 {}", dir.path().display())))?;
    Ok(dir)
}
