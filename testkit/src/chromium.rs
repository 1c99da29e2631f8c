//! A headless Chromium (Debian's `chromium`) driven through the DevTools
//! protocol, for tests of the pages shopfloor serves: load a page, wait for
//! something to appear in its DOM, click it with the mouse, take a
//! screenshot.
//!
//! One browser, one page. The browser listens on a port of its own choosing
//! on 127.0.0.1 (`--remote-debugging-port=0`, read back from the
//! `DevToolsActivePort` file in its profile folder) and the driver talks to
//! its first page over a WebSocket. JavaScript exceptions the page throws
//! are collected: [`Chromium::exceptions`].

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};

use crate::Error;
use crate::process::{self, Proc, START_TIMEOUT};

const INSTALL: &str = "apt-get install -y chromium";
/// How long one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running headless Chromium with one page. Dropping it stops the
/// browser and removes its profile folder.
#[derive(Debug)]
pub struct Chromium {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    exceptions: Vec<String>,
    log_path: PathBuf,
    process: Option<Proc>,
    // Last: the browser stops before its profile goes.
    dir: TempDir,
}

fn devtools(what: impl Into<String>) -> Error {
    Error::DevTools(what.into())
}

/// `GET /json/list`: the body. DevTools' HTTP server refuses HTTP/1.0 and
/// keeps the connection open, so the body is read by its length.
fn target_list(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /json/list HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut data = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&data);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        });
        if length.is_some_and(|n| body.len() >= n) {
            return Ok(body.to_owned());
        }
    }
}

impl Chromium {
    /// Starts `/usr/bin/chromium` headless, with a 1280×900 window.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Path::new("/usr/bin/chromium"), (1280, 900))
    }

    /// Starts `binary` headless with a window of `width`×`height` pixels.
    pub fn start_with(binary: &Path, (width, height): (u32, u32)) -> Result<Self, Error> {
        process::installed("chromium", binary, INSTALL)?;
        let dir = process::instance_dir("chromium-")?;
        let profile = dir.path().join("profile");
        let log_path = dir.path().join("chromium.log");
        let (stdout, stderr) = process::open_log(&log_path)?;
        let mut cmd = Command::new(binary);
        cmd.args([
            "--headless=new",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--mute-audio",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"));
        if process::is_root() {
            // Chromium's sandbox refuses to run as root.
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank").stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let mut proc = Proc::spawn(cmd, None, true)
            .map_err(Error::io(format!("spawning {}", binary.display())))?;
        let fail = |reason: String| Error::Start {
            server: "chromium",
            reason,
            log_tail: process::tail(&process::log_since(&log_path, 0), 20),
            log: log_path.clone(),
        };
        // The port, then the page's WebSocket address.
        let active = profile.join("DevToolsActivePort");
        let port = process::poll_until(START_TIMEOUT, || {
            if let Some(status) = proc.poll_exit() {
                return Some(Err(status));
            }
            let text = std::fs::read_to_string(&active).ok()?;
            text.lines().next()?.trim().parse::<u16>().ok().map(Ok)
        });
        let port = match port {
            Some(Ok(port)) => port,
            Some(Err(status)) => return Err(fail(format!("it exited ({status})"))),
            None => {
                proc.kill();
                return Err(fail(format!("no DevTools port after {START_TIMEOUT:?}")));
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let page = process::poll_until(START_TIMEOUT, || {
            let list: Value = serde_json::from_str(&target_list(addr).ok()?).ok()?;
            list.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
        let Some(url) = page else {
            proc.kill();
            return Err(fail(format!("no page in /json/list after {START_TIMEOUT:?}")));
        };
        let stream = TcpStream::connect(addr)
            .map_err(Error::io(format!("connecting to Chromium's DevTools on {addr}")))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(Error::io("setting a read timeout"))?;
        let (socket, _) = tungstenite::client(url.as_str(), stream)
            .map_err(|e| devtools(format!("WebSocket handshake with {url}: {e}")))?;
        let mut browser =
            Self { socket, next_id: 0, exceptions: Vec::new(), log_path, process: Some(proc), dir };
        browser.call("Runtime.enable", json!({}))?;
        browser.call("Page.enable", json!({}))?;
        Ok(browser)
    }

    /// Sends one DevTools command and waits for its result, collecting the
    /// events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(text))
            .map_err(|e| devtools(format!("sending {method}: {e}")))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            if Instant::now() > deadline {
                return Err(devtools(format!("{method}: no answer within {CALL_TIMEOUT:?}")));
            }
            let message = match self.socket.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(devtools(format!("{method}: {e}"))),
            };
            let Ok(message) = serde_json::from_str::<Value>(message.as_str()) else { continue };
            if message["method"] == "Runtime.exceptionThrown" {
                let d = &message["params"]["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or_else(|| d["text"].as_str());
                self.exceptions.push(text.unwrap_or("an exception").to_owned());
            }
            if message["id"] != id {
                continue;
            }
            if let Some(e) = message.get("error") {
                return Err(devtools(format!("{method}: {e}")));
            }
            return Ok(message["result"].clone());
        }
    }

    /// Opens `url` and waits until its `load` event.
    pub fn navigate(&mut self, url: &str) -> Result<(), Error> {
        let result = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = result["errorText"].as_str() {
            return Err(devtools(format!("opening {url}: {e}")));
        }
        self.wait_for("document.readyState === 'complete'", Duration::from_secs(20))?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise)
    /// and returns its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Result<Value, Error> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = result.get("exceptionDetails") {
            let text = e["exception"]["description"].as_str().or_else(|| e["text"].as_str());
            return Err(devtools(format!("evaluating `{expression}`: {}", text.unwrap_or("?"))));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it gives something other
    /// than `null`, `undefined` or `false`, at most for `within`; that value.
    pub fn wait_for(&mut self, expression: &str, within: Duration) -> Result<Value, Error> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression)?;
            if !(value.is_null() || value == false) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(devtools(format!("`{expression}` not true within {within:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the middle of the first element matching the CSS `selector`
    /// with the mouse (press and release, as a person does), after
    /// scrolling it into view.
    pub fn click(&mut self, selector: &str) -> Result<(), Error> {
        let selector_js = Value::String(selector.to_owned()).to_string();
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector_js}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ))?;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            return Err(devtools(format!("click: nothing matches {selector}")));
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )?;
        }
        Ok(())
    }

    /// Saves a PNG of the whole page (not just the window) to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), Error> {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let data = shot["data"].as_str().ok_or_else(|| devtools("a screenshot without data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| devtools(format!("the screenshot's base64: {e}")))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(path, png).map_err(Error::io(format!("writing {}", path.display())))
    }

    /// The uncaught JavaScript exceptions the page has thrown so far (seen
    /// while the driver waited for answers).
    pub fn exceptions(&self) -> &[String] {
        &self.exceptions
    }

    /// The browser's own log (stdout and stderr).
    pub fn log(&self) -> String {
        process::log_since(&self.log_path, 0)
    }

    /// The browser's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Proc::pid)
    }

    /// The browser's scratch folder (profile and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        // A browser has nothing to save: kill it and every renderer it forked.
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }
}
