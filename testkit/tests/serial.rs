//! Tests of `SerialPair` and `SerialServer` (socat).

use std::io::{Read, Write};
use std::time::Duration;

use shopfloor_testkit::{SerialPair, SerialServer};

/// Reads exactly `n` bytes from `from` (a clone of the file or stream),
/// on a thread: a pseudo-terminal has no read timeout. Fails after 10 s.
fn read_n(mut from: impl Read + Send + 'static, n: usize) -> Vec<u8> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0; n];
        let _ = tx.send(from.read_exact(&mut buf).map(|()| buf));
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("no bytes within 10 s").unwrap()
}

#[test]
fn bytes_cross_the_pair_and_the_serial_server() {
    let pair = SerialPair::start().expect("start socat (apt-get install -y socat)");
    let open = |path| std::fs::File::options().read(true).write(true).open(path).unwrap();
    let (mut a, mut b) = (open(pair.a()), open(pair.b()));
    a.write_all(b"ping").unwrap();
    assert_eq!(read_n(b.try_clone().unwrap(), 4), b"ping");

    let server = SerialServer::start(&pair.a()).expect("start socat's TCP side");
    drop(a);
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    tcp.write_all(b"over tcp").unwrap();
    assert_eq!(read_n(b.try_clone().unwrap(), 8), b"over tcp");
    b.write_all(b"back").unwrap();
    assert_eq!(read_n(tcp.try_clone().unwrap(), 4), b"back");
}
