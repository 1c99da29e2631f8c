//! The servers testkit starts besides Mosquitto and PostgreSQL share one
//! launcher: each serves once started, stops, starts again on the same port,
//! survives a SIGKILL and a start after it, and leaves no process and no
//! folder once dropped.

use std::path::Path;

use shopfloor_testkit::{Alertmanager, ClickHouse, InfluxDb, Nginx, http_get};

/// Runs the life cycle above on `$server`, with `$serves` saying whether it
/// answers. A macro: the handles share methods, not a trait.
macro_rules! life_cycle {
    ($server:expr, $serves:expr) => {{
        let mut server = $server.expect("start the server");
        let serves = $serves;
        let port = server.port();
        assert!(serves(&server), "not serving after the start:\n{}", server.log());
        assert!(server.is_running());
        server.stop();
        assert!(!server.is_running() && server.pid().is_none());
        assert!(std::net::TcpStream::connect(server.addr()).is_err(), "the port still accepts");
        server.start_again().expect("start again after stop");
        assert_eq!(server.port(), port);
        assert!(serves(&server), "not serving after start_again:\n{}", server.log());
        server.kill9();
        server.restart().expect("start after kill9");
        assert_eq!(server.port(), port);
        assert!(serves(&server), "not serving after kill9 and restart:\n{}", server.log());
        let pid = server.pid().expect("a pid while it runs");
        let dir = server.dir().to_owned();
        assert!(server.log_path().starts_with(&dir));
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "server {pid} outlived its handle");
        assert!(!dir.exists(), "{} outlived its handle", dir.display());
    }};
}

#[test]
fn alertmanager_life_cycle() {
    life_cycle!(Alertmanager::start(), |a: &Alertmanager| a.alerts().is_ok_and(|b| b == "[]\n"));
}

#[test]
fn clickhouse_life_cycle() {
    life_cycle!(ClickHouse::start(), |c: &ClickHouse| c
        .query("SELECT 1")
        .is_ok_and(|r| r == "1\n"));
}

#[test]
fn influxdb_life_cycle() {
    life_cycle!(InfluxDb::start(), |i: &InfluxDb| {
        i.query("", "SHOW DATABASES").is_ok_and(|r| r.starts_with("{\"results\""))
    });
}

#[test]
fn nginx_life_cycle() {
    let locations = "    location / { return 200 \"from nginx\"; }";
    life_cycle!(Nginx::start(locations), |n: &Nginx| {
        http_get(n.addr(), "/").is_ok_and(|(status, body)| status == 200 && body == "from nginx")
    });
}
