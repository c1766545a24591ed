//! Reading the conformance kit's table (`rebound plugin test`) in tests.
#![allow(dead_code)]

/// The table's row whose first column is `scenario` (columns are apart by
/// two spaces or more; a scenario's name has single spaces only, so
/// "cleanup" does not find "cleanup (workloads)").
pub fn row<'a>(out: &'a str, scenario: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.trim_start_matches('│')
                .trim_start()
                .strip_prefix(scenario)
                .is_some_and(|rest| rest.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no row for {scenario}:\n{out}"))
}

/// Each of `scenarios` passed.
pub fn assert_passed(out: &str, scenarios: &[&str]) {
    for scenario in scenarios {
        let row = row(out, scenario);
        assert!(row.contains("pass"), "{scenario}: {row}\n{out}");
    }
}
