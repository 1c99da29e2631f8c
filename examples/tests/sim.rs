//! `shopfloor-sim` as a user meets it: help, the built-in scenario printed
//! and checked, and a broken scenario refused with the place and the fix.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-sim");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_scenario_and_check_config() {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for needle in ["--write-configs", "--check-config", "over-temperature", "EXAMPLES"] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let (code, scenario, _) = run(&["--print-scenario"]);
    assert_eq!(code, Some(0));
    let path = dir.path().join("plant.toml");
    std::fs::write(&path, &scenario).unwrap();
    let (code, plan, err) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        plan.starts_with("ok: 30 machines (22 Modbus, 8 OPC UA), 120 sensors, 5 scripted faults"),
        "{plan}"
    );
    assert!(
        plan.contains(
            "press-03 Hydraulics/Temperature over-temperature at 10 s for 40 s, every 300 s"
        ),
        "{plan}"
    );

    std::fs::write(&path, scenario.replace("machine = \"press-03\"", "machine = \"press-99\""))
        .unwrap();
    let (code, _, err) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, Some(78), "a configuration error is EX_CONFIG");
    assert!(err.contains("plant.toml: fault #1 (press-99): no machine \"press-99\""), "{err}");

    let (code, _, err) = run(&["--frobnicate"]);
    assert_eq!(code, Some(2), "a usage error");
    assert!(err.contains("unexpected argument '--frobnicate'"), "{err}");
}

/// Out of file descriptors, the `/metrics` listener waits instead of
/// spinning: with connections held past its `RLIMIT_NOFILE`, `accept()`
/// fails (EMFILE) and the process uses under a quarter of a core; once
/// they are gone it serves again.
#[test]
fn out_of_file_descriptors_the_metrics_listener_does_not_spin() {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("one.toml");
    std::fs::write(
        &scenario,
        "[plant]\nseed = 1\ntick_ms = 1000\n[serve]\nhost = \"127.0.0.1\"\nmodbus_base_port = 0\nopcua_base_port = 0\n\
         [[line]]\nkind = \"press\"\ncount = 1\nprotocol = \"modbus\"\narea = \"a\"\n",
    )
    .unwrap();
    let port = shopfloor_testkit::free_port().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", scenario.to_str().unwrap(), "--metrics", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 48, rlim_max: 48 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let sim = Kill(cmd.spawn().unwrap());
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let page = shopfloor_testkit::scrape_until(addr, std::time::Duration::from_secs(20), |p| {
        p.contains("shopfloor_build_info")
    });
    assert!(page.contains("binary=\"shopfloor-sim\""), "{page}");
    // More silent connections than it has descriptors: each accepted one
    // waits 5 s for a request; the rest wait in the backlog.
    let held: Vec<std::net::TcpStream> =
        (0..80).filter_map(|_| std::net::TcpStream::connect(addr).ok()).collect();
    assert!(held.len() > 48, "only {} connections", held.len());
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // SAFETY: sysconf only reads a constant.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / tick
    };
    let before = cpu(sim.0.id());
    std::thread::sleep(std::time::Duration::from_secs(2)); // measuring, not waiting
    let used = cpu(sim.0.id()) - before;
    assert!(used < 0.5, "{used:.2} s of CPU in 2 s while out of descriptors");
    drop(held);
    let page = shopfloor_testkit::scrape_until(addr, std::time::Duration::from_secs(30), |p| {
        p.contains("process_open_fds")
    });
    assert!(page.contains("shopfloor_sim_modbus_requests_total"), "{page}");
}

/// The child, killed when the test ends however it ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--write-configs DIR --no-serve`: the gateways' files for a scenario
/// with fixed ports, written without serving (what the Debian package
/// ships); refused when the ports are left to chance.
#[test]
fn no_serve_writes_the_configs_for_fixed_ports_only() {
    let dir = tempfile::tempdir().unwrap();
    let (code, scenario, _) = run(&["--print-scenario"]);
    assert_eq!(code, Some(0));
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(
        &fixed,
        format!("{scenario}\n[serve]\nhost = \"127.0.0.1\"\nmodbus_base_port = 15020\nopcua_base_port = 14840\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stdout, stderr) = run(&[
        "--config",
        fixed.to_str().unwrap(),
        "--write-configs",
        out.to_str().unwrap(),
        "--no-serve",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let modbus = std::fs::read_to_string(out.join("modbus-devices.toml")).unwrap();
    let opcua = std::fs::read_to_string(out.join("opcua-servers.toml")).unwrap();
    assert_eq!(modbus.matches("[[modbus.device]]").count(), 22);
    assert!(modbus.contains("port = 15020\n") && modbus.contains("port = 15041\n"), "{modbus}");
    assert_eq!(opcua.matches("[[server]]").count(), 8);
    assert!(opcua.contains("opc.tcp://127.0.0.1:14847/"), "{opcua}");
    assert!(std::fs::read_to_string(out.join("rules.toml")).unwrap().contains("[[rule]]"));
    // Ports 0 (the built-in plant's): nothing to write without serving.
    let (code, _, stderr) =
        run(&["--write-configs", dir.path().join("x").to_str().unwrap(), "--no-serve"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("fixed base ports"), "{stderr}");
}
