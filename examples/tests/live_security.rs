//! The live page is safe to open (`shopfloor-live`, real Mosquitto, a real
//! nginx in front, a real headless Chromium): built-in logins with Argon2
//! hashes; a host it does not answer to (DNS rebinding) refused; no
//! framing; commands only from its own origin, journaled with the login's
//! name whatever the browser sends; a cap on event streams; behind nginx
//! on a sub-path with basic auth, the user named by the proxy, the event
//! stream not buffered, requests that bypass the proxy refused; and the
//! configuration mistakes that would open it to everyone refused.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shopfloor_testkit::{Chromium, HttpAnswer, Mosquitto, Nginx, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-live");
const WAIT: Duration = Duration::from_secs(20);

/// One exchange (`Connection: close`) with `headers` (whole lines); the
/// head in lower case, for header checks.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> HttpAnswer {
    let mut a = shopfloor_testkit::http_request(addr, method, path, headers, body).unwrap();
    a.head.make_ascii_lowercase();
    a
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// An event stream opened: the reader after its head, or the status it
/// was refused with.
fn open_stream(addr: SocketAddr, path: &str, headers: &str) -> Result<BufReader<TcpStream>, u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\n{headers}\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if status != 200 {
        return Err(status);
    }
    Ok(r)
}

/// The first `data:` line of a stream, and how long it took.
fn first_event(r: &mut BufReader<TcpStream>) -> (String, Duration) {
    let t = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(data) = line.strip_prefix("data: ") {
            return (data.to_owned(), t.elapsed());
        }
    }
}

/// `shopfloor-live` with `live` as the `[live]` section, on `broker`.
struct Page {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, broker: &Mosquitto, live: &str) -> (std::path::PathBuf, u16, u16) {
    let (port, metrics) = (free_port().unwrap(), free_port().unwrap());
    let path = dir.join("live.toml");
    std::fs::write(
        &path,
        format!(
            "[mqtt]\nhost = \"{}\"\nport = {}\n[live]\nlisten = \"127.0.0.1:{port}\"\n{live}\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            broker.host(),
            broker.port()
        ),
    )
    .unwrap();
    (path, port, metrics)
}

fn start_page(broker: &Mosquitto, live: &str, files: &[(&str, &str)]) -> Page {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let (path, port, metrics) = write_config(dir.path(), broker, live);
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let page = Page {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
        _dir: dir,
    };
    // Ready: connected to the broker (GET /ready on the metrics address).
    let deadline = Instant::now() + WAIT;
    while !matches!(shopfloor_testkit::http_get(page.metrics, "/ready"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "shopfloor-live not ready within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    page
}

/// The operator commands the page sends, as MQTT sees them.
async fn commands(broker: &Mosquitto) -> tokio::sync::mpsc::Receiver<serde_json::Value> {
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 10);
    client.subscribe("shopfloor/alarms/command", QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(10);
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _keep = client;
        let mut subscribed = Some(subscribed);
        while let Ok(e) = events.poll().await {
            match e {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        let _ = tx.send(v).await;
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, ready).await.unwrap().unwrap();
    rx
}

fn hash(password: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_hosts_framing_commands_and_the_stream_cap() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let alice = hash("correct horse");
    assert!(alice.starts_with("$argon2id$"), "{alice}");
    let users = format!("# operators of hall 1\nalice:{alice}\n");
    let page = start_page(
        &broker,
        "auth = \"users\"\nusers_file = \"live.users\"\nmax_streams = 2\n",
        &[("live.users", &users)],
    );
    let addr = page.addr;
    let host = format!("Host: {addr}\r\n");
    let login = format!("{host}Authorization: Basic {}\r\n", basic("alice", "correct horse"));

    // Logins.
    let a = request(addr, "GET", "/", &host, "");
    assert_eq!(a.status, 401, "no login");
    assert!(a.head.contains("www-authenticate: basic realm=\"shopfloor live\""), "{}", a.head);
    let wrong = format!("{host}Authorization: Basic {}\r\n", basic("alice", "guess"));
    assert_eq!(request(addr, "GET", "/", &wrong, "").status, 401, "a wrong password");
    let nobody = format!("{host}Authorization: Basic {}\r\n", basic("mallory", "correct horse"));
    assert_eq!(request(addr, "GET", "/", &nobody, "").status, 401, "an unknown user");
    let a = request(addr, "GET", "/", &login, "");
    assert_eq!(a.status, 200);
    assert!(a.body.contains("EventSource(\"events\")"), "relative URLs");
    // Never framed, never cached.
    assert!(a.head.contains("content-security-policy: frame-ancestors 'none'"), "{}", a.head);
    assert!(a.head.contains("x-frame-options: deny"), "{}", a.head);
    assert!(a.head.contains("cache-control: no-store"), "{}", a.head);

    // DNS rebinding: the attacker's name for this address is refused,
    // logged in or not; IP addresses and localhost are fine.
    let rebound = format!(
        "Host: evil.example:{}\r\nAuthorization: Basic {}\r\n",
        addr.port(),
        basic("alice", "correct horse")
    );
    let a = request(addr, "GET", "/snapshot", &rebound, "");
    assert_eq!(a.status, 421, "{}", a.body);
    assert!(a.body.contains("allowed_hosts"), "{}", a.body);
    let local = format!(
        "Host: localhost:{}\r\nAuthorization: Basic {}\r\n",
        addr.port(),
        basic("alice", "correct horse")
    );
    assert_eq!(request(addr, "GET", "/snapshot", &local, "").status, 200);

    // Commands: JSON from this origin only; the user is the login's.
    let mut sent = commands(&broker).await;
    let ack = r#"{"command": "acknowledge", "rule": "r", "source": "s", "metric": "m", "user": "mallory"}"#;
    let json = format!("{login}Content-Type: application/json\r\n");
    let foreign = format!("{json}Origin: http://evil.example\r\n");
    assert_eq!(request(addr, "POST", "/command", &foreign, ack).status, 403);
    let form = format!("{login}Content-Type: text/plain\r\n");
    assert_eq!(request(addr, "POST", "/command", &form, ack).status, 415);
    let own = format!("{json}Origin: http://{addr}\r\n");
    let a = request(addr, "POST", "/command", &own, ack);
    assert_eq!(a.status, 202, "{}", a.body);
    let got = tokio::time::timeout(WAIT, sent.recv()).await.unwrap().unwrap();
    assert_eq!(got["command"], "acknowledge");
    assert_eq!(got["user"], "alice", "the login, not what the browser said: {got}");
    let unauthenticated = format!("{host}Content-Type: application/json\r\n");
    assert_eq!(request(addr, "POST", "/command", &unauthenticated, ack).status, 401);

    // At most two streams; a closed one frees its place.
    let one = open_stream(addr, "/events", &login).expect("a first stream");
    let mut two = open_stream(addr, "/events", &login).expect("a second stream");
    assert!(first_event(&mut two).0.starts_with('{'));
    assert_eq!(open_stream(addr, "/events", &login).err(), Some(503), "past max_streams");
    drop(one);
    let deadline = Instant::now() + WAIT;
    loop {
        match open_stream(addr, "/events", &login) {
            Ok(_) => break,
            Err(503) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(s) => panic!("no place freed within 20 s: {s}"),
        }
    }
    // The metrics address says it is alive and ready.
    assert_eq!(shopfloor_testkit::http_get(page.metrics, "/healthz").unwrap().0, 200);
    let (status, body) = shopfloor_testkit::http_get(page.metrics, "/ready").unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    drop(page);
}

/// What would open the page to everyone is a configuration error.
#[test]
fn configurations_that_would_open_the_page_are_refused() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let dir = tempfile::tempdir().unwrap();
    let check = |live: &str| {
        let (path, _, _) = write_config(dir.path(), &broker, live);
        let text = std::fs::read_to_string(&path).unwrap();
        // Reachable from other machines: the listen address of the case.
        let text = if live.contains("anywhere") {
            text.replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:")
        } else {
            text
        };
        std::fs::write(&path, text).unwrap();
        let out =
            Command::new(BIN).arg("--config").arg(&path).arg("--check-config").output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    std::fs::write(dir.path().join("bad.users"), "alice:plain-text\n").unwrap();
    for (live, says) in [
        ("# anywhere", "reachable from other machines"),
        ("auth = \"users\"", "needs live.users_file"),
        ("auth = \"users\"\nusers_file = \"missing.users\"", "missing.users"),
        ("auth = \"users\"\nusers_file = \"bad.users\"", "hash-password"),
        ("auth = \"proxy\"", "needs live.trusted_proxies"),
        ("auth = \"ldap\"", "use \"none\", \"users\" or \"proxy\""),
        ("trusted_proxies = [\"127.0.0.1\"]", "with auth = \"proxy\" only"),
    ] {
        let (code, text) = check(live);
        assert_eq!(code, Some(78), "{live}: {text}");
        assert!(text.contains(says), "{live}: {text}");
    }
    // Said on purpose, it may.
    let (code, text) = check("# anywhere\nauth = \"none\"");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no login"), "{text}");
}

/// Behind Debian's nginx on `/plant/` with basic auth, in headless
/// Chromium: the page loads, its stream flows unbuffered, Acknowledge
/// sends the proxy's user; a request that bypasses the proxy is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_on_a_sub_path_with_the_proxys_login() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let page = start_page(&broker, "auth = \"proxy\"\ntrusted_proxies = [\"127.0.0.1\"]\n", &[]);
    let htpasswd = Command::new("openssl")
        .args(["passwd", "-apr1", "s3cret"])
        .output()
        .expect("openssl (apt-get install -y openssl)");
    let htpasswd = format!("bob:{}", String::from_utf8_lossy(&htpasswd.stdout).trim());
    let nginx = Nginx::start_with_files(
        &format!(
            "    location = /plant {{ return 301 /plant/; }}\n    location /plant/ {{\n      \
             auth_basic \"plant\";\n      auth_basic_user_file {{dir}}/htpasswd;\n      \
             proxy_pass http://{}/;\n      proxy_http_version 1.1;\n      \
             proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-Host $http_host;\n      \
             proxy_set_header X-Forwarded-User $remote_user;\n    }}",
            page.addr
        ),
        &[("htpasswd", &htpasswd)],
    )
    .expect("start nginx (apt-get install -y nginx)");
    let front = nginx.addr();
    let host = format!("Host: {front}\r\n");
    let bob = format!("{host}Authorization: Basic {}\r\n", basic("bob", "s3cret"));

    assert_eq!(request(front, "GET", "/plant/", &host, "").status, 401, "nginx wants a login");
    let a = request(front, "GET", "/plant/", &bob, "");
    assert_eq!(a.status, 200, "{}\n{}", a.body, nginx.log());
    assert!(a.head.contains("frame-ancestors 'none'"), "{}", a.head);
    // The stream through nginx: the first event within 2 s (a buffering
    // proxy would hold it until its buffer filled).
    let mut stream = open_stream(front, "/plant/events", &bob).expect("the stream via nginx");
    let (event, took) = first_event(&mut stream);
    assert!(event.starts_with('{') && took < Duration::from_secs(3), "{took:?}: {event}");
    drop(stream);

    // Around the proxy, from another local address: refused, even naming
    // a user.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(page.addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(b"GET /snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-User: bob\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");

    // An alarm, as alertd keeps it (retained), then the browser.
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("alertd-stand-in", broker.host(), broker.port()), 10);
    let state = r#"{"rule": "press-temp", "source": "Plant1/gw/press-1", "metric": "temp", "active": "HH", "unacknowledged": true}"#;
    client
        .publish("shopfloor/alarms/state/press-temp/press-1/temp", QoS::AtLeastOnce, true, state)
        .await
        .unwrap();
    let publisher = tokio::spawn(async move {
        let _keep = client;
        while events.poll().await.is_ok() {}
    });
    let mut sent = commands(&broker).await;

    let mut browser = Chromium::start().unwrap_or_else(|e| panic!("{e}"));
    browser.call("Network.enable", serde_json::json!({})).unwrap();
    browser
        .call(
            "Network.setExtraHTTPHeaders",
            serde_json::json!({"headers": {"Authorization": format!("Basic {}", basic("bob", "s3cret"))}}),
        )
        .unwrap();
    browser.navigate(&format!("http://{front}/plant")).unwrap();
    let row = "document.querySelector('tr[data-alarm] button.ack')";
    browser.wait_for(&format!("!!{row} && location.pathname === '/plant/'"), WAIT).unwrap_or_else(
        |e| panic!("{e}: {}", browser.eval("document.body.innerText").unwrap_or_default()),
    );
    browser.click("tr[data-alarm] button.ack").unwrap();
    let got =
        tokio::time::timeout(WAIT, sent.recv()).await.expect("a command within 20 s").unwrap();
    assert_eq!(got["command"], "acknowledge", "{got}");
    assert_eq!(got["source"], "Plant1/gw/press-1", "{got}");
    assert_eq!(got["user"], "bob", "the proxy's user: {got}");
    assert!(browser.exceptions().is_empty(), "{:?}", browser.exceptions());
    publisher.abort();
    drop(nginx);
    drop(page);
}
