//! Node.js protocol peers (Eclipse Tahu's JavaScript Sparkplug codec) from
//! the project-local `.node/` that `scripts/test` installs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// The command that installs the Node.js peers, for error messages.
pub const NODE_INSTALL: &str = "scripts/test (or: mkdir -p .node && cp testkit/node/package*.json .node/ && npm ci --prefix .node)";

/// Runs `testkit/node/<script>` with the installed peers, `input` on its
/// stdin, and returns its stdout (a failure with its stderr is an error).
pub fn run_node(script: &str, input: &str) -> Result<String, Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("../.node/node_modules");
    if !modules.join("sparkplug-payload").is_dir() {
        return Err(Error::NotInstalled {
            name: "the Node.js test peers (.node)",
            path: modules,
            install: NODE_INSTALL,
        });
    }
    let node = ["/usr/bin/node", "/usr/local/bin/node"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(Error::NotInstalled {
            name: "Node.js",
            path: "/usr/bin/node".into(),
            install: "apt-get install -y nodejs",
        })?;
    let path = root.join("node").join(script);
    let mut child = Command::new(&node)
        .arg(&path)
        .env("NODE_PATH", &modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting {} {}", node.display(), path.display())))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .map_err(Error::io(format!("writing to {}", path.display())))?;
    let out = child.wait_with_output().map_err(Error::io(format!("running {}", path.display())))?;
    if !out.status.success() {
        return Err(Error::Io {
            what: format!("{} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr)),
            source: std::io::Error::other(out.status.to_string()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
