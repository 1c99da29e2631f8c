//! A private PostgreSQL cluster.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use std::{mem, ptr};

use tempfile::TempDir;

use crate::Error;
use crate::pki::Pki;
use crate::process::{self, RunAs};
use crate::server::{Server, loopback, server_handle};

const INSTALL: &str = "apt-get install -y postgresql";
const INSTALL_TIMESCALEDB: &str = "SHOPFLOOR_TIMESCALEDB_SRC=/path/to/timescaledb-2.28.3.tar.gz scripts/test \
    (builds and installs it), or the timescaledb-2-postgresql-<version> package from Timescale's apt repository";

/// Where the TimescaleDB extension's control file is for the PostgreSQL of
/// `bin_dir` (`/usr/lib/postgresql/15/bin` → `/usr/share/postgresql/15/…`).
fn timescaledb_control(bin_dir: &Path) -> PathBuf {
    let version = bin_dir.parent().and_then(Path::file_name).unwrap_or_default();
    Path::new("/usr/share/postgresql").join(version).join("extension/timescaledb.control")
}

/// Whether TimescaleDB is installed for the newest PostgreSQL here.
pub fn timescaledb_installed() -> bool {
    find_bin_dir().is_ok_and(|dir| timescaledb_control(&dir).is_file())
}
const VERSIONS_DIR: &str = "/usr/lib/postgresql";
/// The OS user the server runs as when the tests run as root.
const OS_USER: &str = "postgres";

/// Options for a [`Postgres`] cluster; made by [`Postgres::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "call .start() to start the cluster"]
pub struct PostgresBuilder {
    bin_dir: Option<PathBuf>,
    settings: Vec<(String, String)>,
    timescaledb: bool,
    tls: bool,
}

impl PostgresBuilder {
    /// The folder holding `initdb` and `postgres`. Default: the highest
    /// version in `/usr/lib/postgresql/*/bin` (Debian's layout).
    pub fn bin_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(path.into());
        self
    }

    /// Passes `-c NAME=VALUE` to the server, after testkit's own settings, so
    /// it can override them (`fsync`, `TimeZone`…).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Loads TimescaleDB: `shared_preload_libraries = 'timescaledb'`, with
    /// its telemetry off. [`start`](Self::start) fails with
    /// [`Error::NotInstalled`], naming how to install it, when the
    /// extension is not installed for this PostgreSQL version (Debian has no
    /// package for it: `scripts/test` builds it from a source tarball named
    /// by `SHOPFLOOR_TIMESCALEDB_SRC`).
    pub fn timescaledb(self) -> Self {
        let mut b = self.setting("shared_preload_libraries", "timescaledb");
        b.settings.push(("timescaledb.telemetry_level".into(), "off".into()));
        b.timescaledb = true;
        b
    }

    /// TLS on: a new CA signs the server's certificate (for `localhost`
    /// and `127.0.0.1`; [`Postgres::ca_cert_pem`]). Clients without TLS are
    /// still accepted; `pg_stat_ssl` tells a session's.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Copies a freshly initialised cluster into a new temporary folder,
    /// starts it on a free loopback port and waits until it answers a real
    /// connection.
    ///
    /// The first start in a test process runs `initdb` once (about a second)
    /// into a template that later starts copy (about 0.2 s each). Fails with
    /// [`Error::NotInstalled`] naming `apt-get install -y postgresql` when the
    /// binaries are missing, and with [`Error::Start`] carrying the log's tail
    /// when the server exits or is not ready within 20 s.
    pub fn start(self) -> Result<Postgres, Error> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bin_dir()?,
        };
        for program in ["initdb", "postgres"] {
            process::installed("postgresql", &bin_dir.join(program), INSTALL)?;
        }
        if self.timescaledb {
            process::installed("timescaledb", &timescaledb_control(&bin_dir), INSTALL_TIMESCALEDB)?;
        }
        let run_as = if process::is_root() {
            let user = RunAs::lookup(OS_USER).ok_or(Error::UserNotFound {
                user: OS_USER,
                server: "PostgreSQL",
                install: INSTALL,
            })?;
            Some(user)
        } else {
            None
        };
        let template = template(&bin_dir, run_as)?;
        let dir = process::instance_dir("postgres-")?;
        let data_dir = dir.path().join("data");
        copy_dir(&template, &data_dir)?;
        let socket_dir = dir.path().join("sock");
        fs::create_dir(&socket_dir)
            .and_then(|()| fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700)))
            .map_err(Error::io(format!("creating {}", socket_dir.display())))?;
        if let Some(user) = run_as {
            user.chown(&socket_dir)?;
        }
        let mut options = self;
        let ca_cert_pem = if options.tls {
            let pki = Pki::generate()?;
            for (name, pem) in
                [("server.crt", pki.server_cert_pem()), ("server.key", pki.server_key_pem())]
            {
                let path = data_dir.join(name);
                fs::write(&path, pem)
                    .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o600)))
                    .map_err(Error::io(format!("writing {}", path.display())))?;
                if let Some(user) = run_as {
                    user.chown(&path)?;
                }
            }
            options.settings.push(("ssl".into(), "on".into()));
            options.settings.push(("ssl_cert_file".into(), "server.crt".into()));
            options.settings.push(("ssl_key_file".into(), "server.key".into()));
            Some(pki.ca_cert_pem().to_owned())
        } else {
            None
        };
        // Fast shutdown: sessions are ended, then a checkpoint.
        let mut server = Server::new("postgres", dir.path().join("postgres.log"), libc::SIGINT);
        // The postmaster forks backends, which die with it.
        (server.run_as, server.tree) = (run_as, true);
        let mut cluster =
            Postgres { ca_cert_pem, bin_dir, data_dir, socket_dir, server, options, dir };
        cluster.launch(true)?;
        Ok(cluster)
    }
}

/// A running PostgreSQL cluster of its own, from the system binaries,
/// listening on `127.0.0.1` only, with its data directory, Unix socket and
/// log in a private temporary folder.
///
/// - Database superuser `postgres`, database `postgres`, no password: `trust`
///   authentication for loopback and the Unix socket only (initdb's
///   `-A trust`); [`connection_string`](Self::connection_string) is ready for
///   `tokio_postgres::connect(…, NoTls)`.
/// - Durability against power cuts is off for speed: `fsync` and
///   `full_page_writes` are `off`. `synchronous_commit` stays `on` (with
///   `fsync` off it costs a `write`, not a disk flush), so every committed
///   row survives [`restart`](Self::restart) and [`kill9`](Self::kill9), as
///   at-least-once tests need; `.setting("synchronous_commit", "off")` trades
///   that for a little speed. `TimeZone` is `UTC`.
/// - When the tests run as root, the server runs as the OS user `postgres`
///   (PostgreSQL refuses root); otherwise as the current user.
///
/// Dropping it stops the server (fast shutdown: SIGINT, then SIGKILL to the
/// postmaster and all its children after 10 s), reaps every process of it and
/// removes the folder, also when the test panics. If the test process itself
/// is killed, the kernel SIGKILLs the postmaster and its backends exit when
/// they notice.
///
/// Methods that start or stop the server block the calling thread; they may
/// be called from async tests.
#[derive(Debug)]
pub struct Postgres {
    options: PostgresBuilder,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    server: Server<1>,
    /// The CA certificate (PEM), with [`PostgresBuilder::tls`].
    ca_cert_pem: Option<String>,
    // Last, so that the server stops before its folder is removed.
    dir: TempDir,
}

server_handle!(Postgres);

impl Postgres {
    /// The CA certificate (PEM) that signed the server's, with
    /// [`PostgresBuilder::tls`].
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_cert_pem.as_deref()
    }

    /// For tests of a TLS client, with [`PostgresBuilder::tls`]: the
    /// server's CA certificate and another CA's, written as `ca.crt` and
    /// `other-ca.crt` into `dir`.
    pub fn ca_files(&self, dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
        let ours = self.ca_cert_pem().ok_or(Error::Usage("ca_files needs PostgresBuilder::tls"))?;
        let other = Pki::generate()?;
        let files = (dir.join("ca.crt"), dir.join("other-ca.crt"));
        for (path, pem) in [(&files.0, ours), (&files.1, other.ca_cert_pem())] {
            fs::write(path, pem).map_err(Error::io(format!("writing {}", path.display())))?;
        }
        Ok(files)
    }

    /// Options for a new cluster.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// Starts a cluster with the default options.
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    /// The host to connect to: `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The database superuser: `"postgres"`.
    pub fn user(&self) -> &'static str {
        "postgres"
    }

    /// The database that exists from the start: `"postgres"`.
    pub fn dbname(&self) -> &'static str {
        "postgres"
    }

    /// A libpq key-value connection string,
    /// `host=127.0.0.1 port=N user=postgres dbname=postgres`.
    pub fn connection_string(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port())
    }

    /// A `tokio_postgres` session on it as `postgres` without TLS, its
    /// connection driven by a task on the current tokio runtime.
    pub async fn client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.connection_string(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The sessions whose `application_name` is `application`: how many,
    /// and how many of them use TLS.
    pub async fn tls_sessions(
        &self,
        application: &str,
    ) -> Result<(i64, i64), tokio_postgres::Error> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s
                 JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&application],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// The same as a URL, `postgresql://postgres@127.0.0.1:N/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port())
    }

    /// The folder holding the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The folder holding `initdb`, `postgres`, `psql`… that this cluster uses.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    fn launch(&mut self, fresh: bool) -> Result<(), Error> {
        let postgres = self.bin_dir.join("postgres");
        let (data_dir, dir, settings) = (&self.data_dir, self.dir.path(), &self.options.settings);
        let socket_dir = format!("unix_socket_directories={}", self.socket_dir.display());
        let command = |&[port]: &[u16; 1]| {
            let mut cmd = Command::new(&postgres);
            cmd.arg("-D").arg(data_dir).arg("-p").arg(port.to_string());
            let fixed = [
                "listen_addresses=127.0.0.1",
                &socket_dir,
                // Speed without losing acknowledged commits to kill9: fsync=off
                // keeps committed WAL in the OS (lost only on a power cut), while
                // synchronous_commit stays on so that a commit has reached the OS
                // before it returns (off would lose the last ~0.6 s on kill9).
                "fsync=off",
                "full_page_writes=off",
                // Dynamic shared memory as files in the data directory, not in
                // /dev/shm, where a killed cluster would leave them behind.
                "dynamic_shared_memory_type=mmap",
                "TimeZone=UTC",
            ];
            for setting in fixed {
                cmd.arg("-c").arg(setting);
            }
            for (name, value) in settings {
                cmd.arg("-c").arg(format!("{name}={value}"));
            }
            cmd.current_dir(dir).env("LC_ALL", "C");
            Ok(cmd)
        };
        // Ready once `postmaster.pid` says `ready` for this postmaster and a
        // real session (startup, authentication, ReadyForQuery) succeeds.
        let pid_file = data_dir.join("postmaster.pid");
        self.server.launch(fresh, command, |&[port], attempt| {
            let lock = fs::read_to_string(&pid_file).unwrap_or_default();
            let mut lines = lock.lines();
            let ours = lines.next() == Some(attempt.pid.to_string().as_str());
            let ready = lines.nth(6).is_some_and(|status| status.trim() == "ready");
            ours && ready && accepts_sessions(loopback(port))
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // After kill9 without start_again, nothing else frees it.
        release_shared_memory(&self.data_dir);
    }
}

/// Removes the System V shared memory segment that a killed postmaster left
/// behind, as named in its stale `postmaster.pid`, once nothing is attached
/// and it still has the recorded key and the data directory's owner. (A
/// clean shutdown removes `postmaster.pid` and the segment itself.)
pub(crate) fn release_shared_memory(data_dir: &Path) {
    let Ok(lock) = fs::read_to_string(data_dir.join("postmaster.pid")) else { return };
    let Ok(owner) = fs::metadata(data_dir).map(|m| m.uid()) else { return };
    // Line 7 is "KEY SHMID" (PostgreSQL's LOCK_FILE_LINE_SHMEM_KEY).
    let mut ids = lock.lines().nth(6).unwrap_or_default().split_whitespace();
    let key = ids.next().and_then(|k| k.parse::<libc::key_t>().ok());
    let shmid = ids.next().and_then(|id| id.parse::<libc::c_int>().ok());
    let (Some(key), Some(shmid)) = (key, shmid) else { return };
    // SAFETY: shmid_ds is plain data; all-zero is a valid value.
    let mut segment: libc::shmid_ds = unsafe { mem::zeroed() };
    // SAFETY: IPC_STAT writes into a valid shmid_ds.
    if unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut segment) } != 0 {
        return;
    }
    if segment.shm_perm.__key == key && segment.shm_perm.uid == owner && segment.shm_nattch == 0 {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe {
            libc::shmctl(shmid, libc::IPC_RMID, ptr::null_mut());
        }
    }
}

/// The highest version's `bin` folder under `/usr/lib/postgresql`.
fn find_bin_dir() -> Result<PathBuf, Error> {
    let not_installed = || Error::NotInstalled {
        name: "postgresql",
        path: Path::new(VERSIONS_DIR).join("*/bin/initdb"),
        install: INSTALL,
    };
    let entries = fs::read_dir(VERSIONS_DIR).map_err(|_| not_installed())?;
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|v| v.split('.').map(str::parse::<u32>).collect::<Result<Vec<_>, _>>().ok())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        let usable = bin.join("initdb").is_file() && bin.join("postgres").is_file();
        if usable && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(not_installed)
}

/// The initialised data directory for `bin_dir`, made once per test process
/// (and per `bin_dir`); concurrent first starts wait for the one `initdb`.
fn template(bin_dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf, Error> {
    static TEMPLATES: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut templates = TEMPLATES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, data)) = templates.iter().find(|(bin, _)| bin == bin_dir) {
        return Ok(data.clone());
    }
    let dir = tempfile::Builder::new()
        .prefix("postgres-template-")
        .tempdir_in(process::scratch_dir()?)
        .map_err(Error::io("creating the template folder"))?
        .keep();
    let data = dir.join("data");
    let created = fs::create_dir(&data)
        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)))
        .and_then(|()| fs::set_permissions(&data, fs::Permissions::from_mode(0o700)));
    created.map_err(Error::io(format!("creating {}", data.display())))?;
    if let Some(user) = run_as {
        user.chown(&data)?;
    }
    let initdb = bin_dir.join("initdb");
    let mut cmd = Command::new(&initdb);
    cmd.arg("-D").arg(&data);
    cmd.args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]);
    // 1 MB WAL segments instead of 16 MB: a smaller template copies faster.
    cmd.args(["--no-sync", "--no-instructions", "--wal-segsize=1"]);
    cmd.current_dir(&dir).env("LC_ALL", "C").stdin(Stdio::null());
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
    }
    let output = cmd.output().map_err(Error::io(format!("running {}", initdb.display())))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{} -D {} -U postgres -A trust", initdb.display(), data.display()),
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    templates.push((bin_dir.to_owned(), data.clone()));
    Ok(data)
}

/// `cp -a`: keeps owners and modes (PostgreSQL insists on a 0700 data
/// directory owned by the user it runs as).
fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    let output = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .map_err(Error::io("running cp -a for the data directory"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("cp -a {} {}", from.display(), to.display()),
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Whether a session as `postgres` on database `postgres` reaches
/// ReadyForQuery (protocol 3.0, trust authentication).
fn accepts_sessions(addr: SocketAddr) -> bool {
    fn session(addr: SocketAddr) -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut body = 0x0003_0000_u32.to_be_bytes().to_vec(); // protocol 3.0
        for field in ["user", "postgres", "database", "postgres", ""] {
            body.extend_from_slice(field.as_bytes());
            body.push(0);
        }
        let length = u32::try_from(body.len() + 4).map_err(io::Error::other)?;
        let mut startup = length.to_be_bytes().to_vec();
        startup.extend(body);
        stream.write_all(&startup)?;
        for _ in 0..100 {
            let mut header = [0_u8; 5];
            stream.read_exact(&mut header)?;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let length = usize::try_from(length).map_err(io::Error::other)?;
            if !(4..=1 << 20).contains(&length) {
                return Ok(false);
            }
            let mut rest = vec![0; length - 4];
            stream.read_exact(&mut rest)?;
            match header[0] {
                b'Z' => {
                    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]); // Terminate
                    return Ok(true);
                }
                b'E' => return Ok(false), // e.g. "the database system is starting up"
                _ => {}
            }
        }
        Ok(false)
    }
    session(addr).unwrap_or(false)
}
