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
