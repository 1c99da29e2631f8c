//! CONFORMANCE.md stays honest: all 299 tck-ids, "checked" exactly where the
//! checker checks, and every test it cites exists where it says.

use std::collections::HashSet;
use std::path::Path;

use shopfloor_sparkplug::checker::CHECKED;

fn rows() -> Vec<(String, String, String)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFORMANCE.md"))
            .unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `tck-id"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].to_owned(), cells[2].to_owned())
        })
        .collect()
}

#[test]
fn every_statement_is_listed_once() {
    let rows = rows();
    let ids: HashSet<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(rows.len(), 299);
    assert_eq!(ids.len(), 299, "duplicate rows");
    for (id, status, _) in &rows {
        assert!(
            ["checked", "tested", "n/a", "not yet"].contains(&status.as_str()),
            "{id}: status {status:?}"
        );
    }
}

#[test]
fn checked_means_the_checker_checks_it() {
    let rows = rows();
    let marked: HashSet<&str> =
        rows.iter().filter(|(_, s, _)| s == "checked").map(|(id, _, _)| id.as_str()).collect();
    let checked: HashSet<&str> = CHECKED.iter().copied().collect();
    assert_eq!(marked, checked, "CONFORMANCE.md and checker::CHECKED disagree");
    let listed: HashSet<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
    for id in CHECKED {
        assert!(listed.contains(id), "{id} is checked but no tck-id of the specification");
    }
}

#[test]
fn cited_tests_exist() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cited = 0;
    for (id, _, evidence) in rows() {
        for part in evidence
            .split(';')
            .map(str::trim)
            .filter(|p| p.starts_with("tests/") || p.starts_with("../mqtt/tests/"))
        {
            let (file, names) = part.split_once(' ').unwrap_or((part, ""));
            let source = std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|_| panic!("{id}: no {file}"));
            for name in names.split(',') {
                let name = name.split('(').next().unwrap_or_default().trim();
                if name.is_empty() {
                    continue;
                }
                assert!(source.contains(&format!("fn {name}(")), "{id}: {file} has no test {name}");
                cited += 1;
            }
        }
    }
    assert!(cited > 100, "only {cited} citations");
}

#[test]
fn the_totals_line_adds_up() {
    let rows = rows();
    let count = |s: &str| rows.iter().filter(|(_, status, _)| status == s).count();
    let line = format!(
        "Totals: {} checked, {} tested, {} not applicable, {} not yet.",
        count("checked"),
        count("tested"),
        count("n/a"),
        count("not yet")
    );
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFORMANCE.md"))
            .unwrap();
    assert!(text.contains(&line), "CONFORMANCE.md should say: {line}");
}
