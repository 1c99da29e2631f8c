//! Tests of `FaultProxy` in front of an echo server and a real broker.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_testkit::{FaultProxy, Mosquitto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// An echo server on the test's runtime.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn echo(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut buf = vec![0; message.len()];
    timeout(WAIT, stream.read_exact(&mut buf)).await.expect("no echo within 10 s").unwrap();
    assert_eq!(buf, message);
}

/// A proxy in front of an echo server, and a connection through it that has
/// echoed `first`.
async fn proxy_and_connection(first: &[u8]) -> (FaultProxy, TcpStream) {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    echo(&mut stream, first).await;
    (proxy, stream)
}

/// Reads until the peer closes or resets; fails if data or nothing arrives.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0; 16];
    match timeout(WAIT, stream.read(&mut buf)).await.expect("connection still open after 10 s") {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected a closed connection, read {n} bytes"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_both_ways() {
    let (proxy, mut stream) = proxy_and_connection(b"hello through the proxy").await;
    assert_ne!(proxy.port(), proxy.upstream().port());
    let big = vec![7_u8; 1 << 20];
    echo(&mut stream, &big).await;
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.active(), 1);
    drop(stream);
    // The echo server runs on this runtime: wait without blocking it.
    let idle = tokio::task::block_in_place(|| proxy.wait_until(WAIT, |p| p.active() == 0));
    assert!(idle, "the closed connection is still active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_closes_open_connections_and_accepts_new_ones() {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    echo(&mut first, b"a").await;
    echo(&mut second, b"b").await;

    proxy.cut();
    assert_closed(&mut first).await;
    assert_closed(&mut second).await;
    assert!(
        proxy.wait_until(WAIT, |p| p.active() == 0),
        "connections are still active after the cut"
    );

    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    echo(&mut third, b"c").await;
    assert_eq!(proxy.accepted(), 3);
}

#[tokio::test]
async fn pause_holds_bytes_until_resume() {
    let (proxy, mut stream) = proxy_and_connection(b"before").await;

    proxy.pause();
    stream.write_all(b"during").await.unwrap();
    let mut buf = [0; 6];
    let silent = timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await;
    assert!(silent.is_err(), "bytes crossed a paused proxy: {silent:?}");

    // A new connection is accepted but goes nowhere while paused.
    let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
    held.write_all(b"held").await.unwrap();

    proxy.resume();
    timeout(WAIT, stream.read_exact(&mut buf)).await.expect("no bytes after resume").unwrap();
    assert_eq!(&buf, b"during");
    let mut four = [0; 4];
    timeout(WAIT, held.read_exact(&mut four)).await.expect("held connection silent").unwrap();
    assert_eq!(&four, b"held");
}

#[tokio::test]
async fn refuse_resets_new_connections_until_resume() {
    let (proxy, mut open) = proxy_and_connection(b"open").await;

    proxy.refuse();
    if let Ok(mut refused) = TcpStream::connect(proxy.addr()).await {
        assert_closed(&mut refused).await;
    }
    assert_eq!(proxy.refused(), 1);
    echo(&mut open, b"still open").await;

    proxy.resume();
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    echo(&mut after, b"after").await;
    assert_eq!(proxy.accepted(), 2);
}

#[test]
fn works_from_sync_code() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = upstream.accept().unwrap();
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).unwrap();
        stream.write_all(&buf).unwrap();
    });
    let proxy = FaultProxy::start(addr).unwrap();
    let mut stream = std::net::TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"sync").unwrap();
    let mut buf = [0; 4];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"sync");
    server.join().unwrap();
}

#[tokio::test]
async fn mqtt_client_reconnects_after_a_cut() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let proxy = FaultProxy::start(broker.addr()).unwrap();
    let mut options = MqttOptions::new("through-proxy", proxy.host(), proxy.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (_client, mut eventloop) = AsyncClient::new(options, 16);
    let mut connacks = 0;
    let mut errors = 0;
    while connacks < 2 {
        match timeout(WAIT, eventloop.poll()).await.expect("no MQTT event within 10 s") {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connacks += 1;
                if connacks == 1 {
                    proxy.cut();
                }
            }
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    assert_eq!(errors, 1, "the cut should surface as exactly one connection error");
    assert_eq!(proxy.accepted(), 2);
}
