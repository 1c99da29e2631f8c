//! Tests of `Postgres` against the real server.

use std::path::Path;
use std::thread;

use shopfloor_testkit::Postgres;
use support::{assert_not_installed, assert_server_dies_with_test_process};

mod support;

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The children of `parent` (for the postmaster: backends and background workers).
fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        if rest.split_whitespace().nth(1) == Some(parent.to_string().as_str()) {
            found.push(entry.file_name().to_str().unwrap().parse().unwrap());
        }
    }
    found
}

#[tokio::test]
async fn select_one() {
    let pg = Postgres::start().expect("start postgres");
    let client = pg.client().await.expect("connect to postgres");
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let user: String = client.query_one("SELECT current_user", &[]).await.unwrap().get(0);
    assert_eq!(user, pg.user());
}

#[test]
fn two_clusters_start_in_parallel_on_different_ports() {
    let starts: Vec<_> =
        (0..2).map(|_| thread::spawn(|| Postgres::start().expect("start postgres"))).collect();
    let clusters: Vec<Postgres> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_ne!(clusters[0].port(), clusters[1].port());
    assert_ne!(clusters[0].data_dir(), clusters[1].data_dir());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for pg in &clusters {
            let client = pg.client().await.expect("connect to postgres");
            let port: String = client.query_one("SHOW port", &[]).await.unwrap().get(0);
            assert_eq!(port, pg.port().to_string());
        }
    });
}

#[tokio::test]
async fn restart_keeps_data() {
    let mut pg = Postgres::start().expect("start postgres");
    let port = pg.port();
    let client = pg.client().await.expect("connect to postgres");
    client.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')").await.unwrap();
    drop(client);

    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    let client = pg.client().await.expect("connect to postgres");
    let v: String = client.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
}

#[tokio::test]
async fn kill9_then_start_again_keeps_committed_rows() {
    let mut pg = Postgres::start().expect("start postgres");
    let client = pg.client().await.expect("connect to postgres");
    client.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)").await.unwrap();
    let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let postmaster = pg.pid().unwrap();
    let workers = children(postmaster);
    assert!(workers.contains(&(backend as u32)), "{backend} not in {workers:?}");

    pg.kill9();
    assert!(!process_exists(postmaster));
    for pid in workers {
        assert!(!process_exists(pid), "postgres process {pid} left behind");
    }
    assert!(client.query_one("SELECT 1", &[]).await.is_err(), "session survived kill9");

    pg.start_again().expect("start again after kill9");
    let client = pg.client().await.expect("connect to postgres");
    let v: i32 = client.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    assert!(pg.log().contains("not properly shut down"), "no crash recovery in the log");
}

#[tokio::test]
async fn drop_leaves_no_server_process() {
    let pg = Postgres::start().expect("start postgres");
    let client = pg.client().await.expect("connect to postgres");
    let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let postmaster = pg.pid().unwrap();
    let dir = pg.dir().to_owned();
    let workers = children(postmaster);
    assert!(workers.contains(&(backend as u32)), "{backend} not in {workers:?}");

    drop(pg);
    assert!(!process_exists(postmaster), "postmaster {postmaster} left behind");
    for pid in workers {
        assert!(!process_exists(pid), "postgres process {pid} left behind");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[tokio::test]
async fn settings_reach_the_server() {
    let pg = Postgres::builder().setting("work_mem", "7MB").start().expect("start postgres");
    let client = pg.client().await.expect("connect to postgres");
    let work_mem: String = client.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(work_mem, "7MB");
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "off");
}

#[test]
fn missing_binaries_name_the_install_command() {
    let error = Postgres::builder().bin_dir("/nonexistent/bin").start().unwrap_err();
    let message = "postgresql not found at /nonexistent/bin/initdb: install it with `apt-get install -y postgresql`";
    assert_not_installed(&error, "postgresql", message);
}

#[test]
fn the_server_dies_when_the_test_process_is_killed() {
    // The postmaster runs as another user when the tests run as root:
    // PDEATHSIG must be set after the switch, which would clear it.
    let test = "the_server_dies_when_the_test_process_is_killed";
    assert_server_dies_with_test_process(test, "TESTKIT_POSTGRES_CHILD", || {
        let pg = Postgres::start().expect("start postgres");
        let pid = pg.pid().unwrap();
        (pg, pid)
    });
}

#[test]
fn drop_after_kill9_frees_shared_memory() {
    let mut pg = Postgres::start().expect("start postgres");
    let lock = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    let shmid: i32 =
        lock.lines().nth(6).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let exists = |id: i32| {
        // SAFETY: shmid_ds is plain data, and IPC_STAT writes into it.
        unsafe {
            let mut segment: libc::shmid_ds = std::mem::zeroed();
            libc::shmctl(id, libc::IPC_STAT, &mut segment) == 0
        }
    };
    assert!(exists(shmid), "no System V segment {shmid}");
    pg.kill9();
    assert!(exists(shmid), "kill9 should leave the segment, like a crash");
    drop(pg);
    assert!(!exists(shmid), "segment {shmid} leaked");
}
