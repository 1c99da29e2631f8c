#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod alertmanager;
mod alloc;
mod amqtt;
#[cfg(feature = "browser")]
mod chromium;
mod clickhouse;
pub mod decoders;
mod durable;
mod error;
mod fixtures;
mod fuzz;
pub mod hostile;
mod influxdb;
mod mosquitto;
mod nginx;
mod node;
mod pki;
mod postgres;
mod process;
mod proxy;
pub mod publish;
mod python;
mod serial;
mod server;

pub use alertmanager::Alertmanager;
pub use alloc::{Counting, allocations, live_heap};
pub use amqtt::Amqtt;
#[cfg(feature = "browser")]
pub use chromium::Chromium;
pub use clickhouse::ClickHouse;
pub use error::Error;
pub use fixtures::{ExpectedReading, MappingShape, mapping_fixtures, mapping_shapes};
pub use fuzz::replay_fuzz_inputs;
pub use hostile::{BadKind, Hostile, HostileMessage};
pub use influxdb::InfluxDb;
pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use nginx::Nginx;
pub use node::{NODE_INSTALL, run_node};
pub use pki::Pki;
pub use postgres::{Postgres, PostgresBuilder, timescaledb_installed};
pub use proxy::FaultProxy;
pub use python::{PythonPeer, VENV_INSTALL, python, shared_script};
pub use serial::{SerialPair, SerialServer};
pub use server::Service;

/// The folder where a test leaves what a person should look at afterwards
/// (screenshots): `$SHOPFLOOR_ARTIFACTS/<name>`, by default
/// `<workspace>/artifacts/<name>`; created if missing.
pub fn artifacts_dir(name: &str) -> Result<std::path::PathBuf, Error> {
    let root = std::env::var_os("SHOPFLOOR_ARTIFACTS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts"),
        std::path::PathBuf::from,
    );
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// A loopback port that was free a moment ago, for a peer that binds its own
/// (a server may still lose the race with another process; retry then).
pub fn free_port() -> Result<u16, Error> {
    process::free_ports::<1>().map(|[p]| p)
}

/// `GET path` on `addr` over HTTP/1.0 (connect within 1 s, answer within
/// 5 s): the status code and the body. For the HTTP endpoints of the
/// servers and binaries under test (Alertmanager's API, `/metrics`).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    exchange(addr, &request, std::time::Duration::from_secs(5)).map(|a| (a.status, a.body))
}

/// What an HTTP server answered ([`http_request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code (0 when the answer has none).
    pub status: u16,
    /// The status line and the header lines, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// One HTTP/1.1 exchange with `addr` (`Connection: close`; connect
/// within 1 s, answer within 10 s): `method path`, the header lines
/// `headers` (each ending in `\r\n`; `Host` too, so that a test can send
/// any), and `body` with its `Content-Length`. For tests that need more
/// than [`http_get`]: another method, headers, the answer's head.
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<HttpAnswer> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request, std::time::Duration::from_secs(10))
}

fn exchange(
    addr: std::net::SocketAddr,
    request: &str,
    answer_within: std::time::Duration,
) -> std::io::Result<HttpAnswer> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))?;
    s.set_read_timeout(Some(answer_within))?;
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok(HttpAnswer { status, head: head.to_owned(), body: body.to_owned() })
}

/// Percent-encodes everything but unreserved characters (a query
/// string's value, for [`http_get`]).
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Scrapes `GET /metrics` on `addr` until the page satisfies `want`, at
/// most for `within`; the page, or panics with the last one seen. A
/// binary updates its counters just after the work they count, so a test
/// that has seen the work waits for them instead of reading them once.
/// A refused connection (a binary still starting) is tried again until
/// the deadline too.
pub fn scrape_until(
    addr: std::net::SocketAddr,
    within: std::time::Duration,
    mut want: impl FnMut(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let page = match http_get(addr, "/metrics") {
            Ok((200, page)) => page,
            Ok((status, page)) => panic!("GET http://{addr}/metrics: {status}\n{page}"),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            Err(e) => panic!("GET http://{addr}/metrics: {e}"),
        };
        if want(&page) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/metrics on {addr} not as expected within {within:?}:\n{page}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
