//! The headless-browser driver against a page served by the test: it
//! loads, a mouse click runs the page's handler, a thrown exception is
//! reported, a screenshot is a PNG, and dropping the browser leaves no
//! process behind.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::time::Duration;

use shopfloor_testkit::Chromium;

const PAGE: &str = r#"<!doctype html><html><body>
<p id="count">0</p>
<button id="b" style="margin: 600px 0 0 40px; padding: 10px">more</button>
<script>
document.getElementById("b").addEventListener("click", () => {
  const c = document.getElementById("count");
  c.textContent = String(Number(c.textContent) + 1);
});
</script></body></html>"#;

/// Serves `PAGE` for every request, from a thread of its own.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    url
}

#[test]
fn loads_clicks_screenshots_and_stops() {
    let url = serve();
    let mut browser = Chromium::start().expect("start chromium");
    let pid = browser.pid().unwrap();
    browser.navigate(&url).unwrap();
    assert_eq!(browser.eval("document.getElementById('count').textContent").unwrap(), "0");

    // A whole-page screenshot first: it must not leave the page's
    // geometry changed for the clicks after it.
    let first = browser.dir().join("first.png");
    browser.screenshot(&first).unwrap();
    // The button is below the fold: click scrolls it into view first.
    browser.click("#b").unwrap();
    browser.click("#b").unwrap();
    let count = browser
        .wait_for(
            "document.getElementById('count').textContent === '2' && 2",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(count, 2);
    assert!(browser.click("#nothing").is_err(), "a selector that matches nothing is an error");
    let timeout = browser.wait_for("false", Duration::from_millis(300)).unwrap_err();
    assert!(timeout.to_string().contains("not true within"), "{timeout}");

    // An uncaught exception in the page is collected.
    assert!(browser.exceptions().is_empty(), "{:?}", browser.exceptions());
    browser.eval("setTimeout(() => { throw new Error('boom in the page') }, 0); 1").unwrap();
    browser
        .wait_for("new Promise((r) => setTimeout(() => r(true), 50))", Duration::from_secs(5))
        .unwrap();
    assert!(
        browser.exceptions().iter().any(|e| e.contains("boom in the page")),
        "{:?}",
        browser.exceptions()
    );

    let png = browser.dir().join("shot.png");
    browser.screenshot(&png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 1000);

    drop(browser);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "chromium {pid} still runs after drop"
    );
}

#[test]
fn a_missing_binary_names_the_package() {
    let e = Chromium::start_with(std::path::Path::new("/nonexistent/chromium"), (800, 600))
        .unwrap_err();
    assert!(e.to_string().contains("apt-get install -y chromium"), "{e}");
}
