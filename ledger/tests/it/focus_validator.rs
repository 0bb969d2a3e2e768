//! The FOCUS export judged by the FinOps Foundation's own validator (PyPI `focus-validator`
//! 1.0.0, whose rules are FOCUS 1.0's), run as a finance team would run it, on a realistic
//! day of metered leases.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, TimeDelta};
use engine_service::testing::{metered_day, Rng, METERED_SPAN, METERED_START};
use ledger::export::{self, Period, FOCUS_COLUMNS};
use ledger::testing::TestDb;

use crate::stream::EngineRun;

/// One check the validator ran and what became of it.
#[derive(Debug)]
struct Check {
    name: String,
    /// `passed`, or the JUnit element that says otherwise: `failure`, `error`, `skipped`.
    outcome: String,
    message: String,
}

/// Reads the validator's JUnit report with Python's own XML parser (the venv has one, the
/// workspace needs no XML crate): one JSON line per test case, after one with the counts
/// the report's root states.
const JUNIT_AS_JSON: &str = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
print(json.dumps({k: int(root.get(k)) for k in ("tests", "failures", "errors", "skipped")}))
for case in root.iter("testcase"):
    outcome = next(iter(case), None)
    print(json.dumps({
        "name": case.get("name"),
        "outcome": "passed" if outcome is None else outcome.tag,
        "message": "" if outcome is None else (outcome.get("message") or ""),
    }))
"#;

/// Runs focus-validator on `csv`; returns every check it ran.
fn focus_validator(csv: &Path, scratch: &Path) -> Vec<Check> {
    // The validator pins old libraries (pandas, pandera, and multimethod, which it does not
    // pin but breaks with from 2.0): they stay in an environment of their own.
    let python = testkit::python_env(
        "focus-validator-1.0.0",
        &["focus-validator==1.0.0", "multimethod<2"],
    );
    let run = |args: &[&std::ffi::OsStr], dir: &Path| {
        let out = Command::new(&python)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the venv's python runs");
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };
    // It opens its list of currency codes by a path relative to the working directory, so it
    // runs from the folder that holds its package.
    let packages = run(
        &[
            "-c".as_ref(),
            "import focus_validator, pathlib; print(pathlib.Path(focus_validator.__file__).parent.parent)"
                .as_ref(),
        ],
        scratch,
    );
    let report = scratch.join("focus-validator.xml");
    run(
        &[
            "-m".as_ref(),
            "focus_validator.main".as_ref(),
            "--data-file".as_ref(),
            csv.as_os_str(),
            "--validate-version".as_ref(),
            "1.0".as_ref(),
            "--output-type".as_ref(),
            "unittest".as_ref(),
            "--output-destination".as_ref(),
            report.as_os_str(),
        ],
        Path::new(packages.trim()),
    );
    // It exits 0 whatever it finds: the report is the verdict.
    let lines = run(
        &["-c".as_ref(), JUNIT_AS_JSON.as_ref(), report.as_os_str()],
        scratch,
    );
    let mut lines = lines.lines();
    let counts: serde_json::Value =
        serde_json::from_str(lines.next().expect("the report's counts")).unwrap();
    let checks: Vec<Check> = lines
        .map(|line| {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |name: &str| case[name].as_str().unwrap_or_default().to_owned();
            Check {
                name: field("name"),
                outcome: field("outcome"),
                message: field("message"),
            }
        })
        .collect();
    assert_eq!(counts["tests"], checks.len(), "{counts}");
    checks
}

/// A day of metered leases (crossing midnight, which ends a month), exported while some of
/// its leases still run: per-period rows, settled and accrued, in two billing periods.
#[test]
fn the_focus_export_passes_the_finops_foundations_validator() {
    let run = EngineRun::file_of(metered_day(&mut Rng(14)));
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let start = DateTime::from_timestamp_millis(METERED_START).unwrap();
    let day = Period::new(start, start + TimeDelta::milliseconds(METERED_SPAN)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let csv = scratch.path().join("focus.csv");
    let written = export::focus_csv(
        &mut db.connect(),
        day,
        "USD",
        std::fs::File::create(&csv).unwrap(),
    )
    .unwrap();
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as u64, written);
    let column = |name: &str| FOCUS_COLUMNS.iter().position(|c| *c == name).unwrap();
    let running = rows
        .iter()
        .filter(|r| r[column("x_SettledAt")].is_empty())
        .count();
    let months: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| &r[column("BillingPeriodStart")])
        .collect();
    assert!(
        running > 0 && running < rows.len() && months.len() == 2,
        "{running} of {} rows running, months {months:?}",
        rows.len()
    );
    let checks = focus_validator(&csv, scratch.path());
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.outcome != "passed")
        .map(|c| format!("{} ({}): {}", c.name, c.outcome, c.message))
        .collect();
    eprintln!(
        "focus-validator 1.0.0: {} checks on {written} rows, {} not passed",
        checks.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checks.len() > 100, "{checks:#?}");
}
