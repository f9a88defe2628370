//! Checks an Autobahn testsuite report (`index.json`) and compares it with the
//! committed expectations (`expected-server.json` / `expected-client.json`).
//!
//! `index.json`, as written by `wstest -m fuzzingclient` / `-m fuzzingserver`:
//!
//! ```json
//! {"agent": {"1.1.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 2,
//!                      "remoteCloseCode": 1000, "reportfile": "agent_case_1_1_1.json"}}}
//! ```
//!
//! The expected files map a case id to its two verdicts:
//!
//! ```json
//! {"1.1.1": {"behavior": "OK", "behaviorClose": "OK"}}
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The verdicts Autobahn reports, in the order the summary line prints them.
pub const BEHAVIORS: [&str; 5] = [
    "OK",
    "INFORMATIONAL",
    "NON-STRICT",
    "FAILED",
    "UNIMPLEMENTED",
];

/// Whether a verdict passes the gate. Anything else (NON-STRICT, FAILED,
/// UNIMPLEMENTED, or a verdict this tool does not know) fails it.
pub fn is_passing(behavior: &str) -> bool {
    matches!(behavior, "OK" | "INFORMATIONAL")
}

/// An Autobahn case id such as `6.4.10`, ordered numerically part by part,
/// so `1.1.9 < 1.1.10 < 1.2.1 < 10.1.1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaseId(pub String);

impl CaseId {
    pub fn new(id: impl Into<String>) -> Self {
        CaseId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for CaseId {
    fn cmp(&self, other: &Self) -> Ordering {
        let mut a = self.0.split('.');
        let mut b = other.0.split('.');
        loop {
            match (a.next(), b.next()) {
                (None, None) => break,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(x), Some(y)) => {
                    let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                        (Ok(x), Ok(y)) => x.cmp(&y),
                        (Ok(_), Err(_)) => Ordering::Less,
                        (Err(_), Ok(_)) => Ordering::Greater,
                        (Err(_), Err(_)) => x.cmp(y),
                    };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
            }
        }
        // Equal numerically ("1.01" vs "1.1"): fall back to the text so that
        // `Ord` agrees with `Eq`.
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for CaseId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The two verdicts of one case: the case itself and its closing handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub behavior: String,
    pub behavior_close: String,
}

impl Outcome {
    pub fn new(behavior: &str, behavior_close: &str) -> Self {
        Outcome {
            behavior: behavior.to_owned(),
            behavior_close: behavior_close.to_owned(),
        }
    }

    pub fn is_passing(&self) -> bool {
        is_passing(&self.behavior) && is_passing(&self.behavior_close)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.behavior, self.behavior_close)
    }
}

/// One row of `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    pub outcome: Outcome,
    /// Milliseconds.
    pub duration: Option<u64>,
    pub remote_close_code: Option<u64>,
    /// Relative to the directory of `index.json`.
    pub report_file: Option<String>,
}

/// The results of one agent in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub agent: String,
    pub cases: BTreeMap<CaseId, CaseResult>,
}

/// The committed expectations: case id to verdicts.
pub type Expected = BTreeMap<CaseId, Outcome>;

fn as_object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what}: expected a JSON object, found {}", kind(value)))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, what: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "{what}: \"{key}\" should be a string, found {}",
            kind(other)
        )),
        None => Err(format!("{what}: missing \"{key}\"")),
    }
}

fn optional_u64(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    obj.get(key).and_then(Value::as_u64)
}

/// Parses `index.json`. With `agent`, picks that agent; without, the file
/// must hold exactly one agent.
pub fn parse_index(text: &str, agent: Option<&str>) -> Result<Report, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let agents = as_object(&root, "index")?;
    let names = || agents.keys().cloned().collect::<Vec<_>>().join(", ");
    let (name, cases) = match agent {
        Some(name) => match agents.get_key_value(name) {
            Some(found) => found,
            None => {
                return Err(format!(
                    "agent \"{name}\" not in report (agents: {})",
                    if agents.is_empty() {
                        "none".to_owned()
                    } else {
                        names()
                    }
                ))
            }
        },
        None => {
            let mut iter = agents.iter();
            match (iter.next(), iter.next()) {
                (Some(only), None) => only,
                (None, _) => return Err("report holds no agent (did any case run?)".to_owned()),
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "report holds several agents ({}); pick one with --agent",
                        names()
                    ))
                }
            }
        }
    };
    let mut report = Report {
        agent: name.clone(),
        cases: BTreeMap::new(),
    };
    for (id, row) in as_object(cases, &format!("agent \"{name}\""))? {
        let what = format!("case {id}");
        let row = as_object(row, &what)?;
        let result = CaseResult {
            outcome: Outcome {
                behavior: string_field(row, "behavior", &what)?,
                behavior_close: string_field(row, "behaviorClose", &what)?,
            },
            duration: optional_u64(row, "duration"),
            remote_close_code: optional_u64(row, "remoteCloseCode"),
            report_file: row
                .get("reportfile")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        report.cases.insert(CaseId::new(id.as_str()), result);
    }
    Ok(report)
}

/// Parses an expected file.
pub fn parse_expected(text: &str) -> Result<Expected, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut expected = Expected::new();
    for (id, row) in as_object(&root, "expected")? {
        let what = format!("case {id}");
        let row = as_object(row, &what)?;
        expected.insert(
            CaseId::new(id.as_str()),
            Outcome {
                behavior: string_field(row, "behavior", &what)?,
                behavior_close: string_field(row, "behaviorClose", &what)?,
            },
        );
    }
    Ok(expected)
}

/// Renders an expected file: one case per line, in numeric case order, so
/// that a change of verdict is a one-line diff.
pub fn render_expected(expected: &Expected) -> String {
    if expected.is_empty() {
        return "{}\n".to_owned();
    }
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    let mut out = String::from("{\n");
    let last = expected.len() - 1;
    for (i, (id, outcome)) in expected.iter().enumerate() {
        out.push_str(&format!(
            "  {}: {{\"behavior\": {}, \"behaviorClose\": {}}}{}\n",
            quote(id.as_str()),
            quote(&outcome.behavior),
            quote(&outcome.behavior_close),
            if i == last { "" } else { "," }
        ));
    }
    out.push_str("}\n");
    out
}

/// The verdicts of a report, in the shape of an expected file.
pub fn outcomes(report: &Report) -> Expected {
    report
        .cases
        .iter()
        .map(|(id, r)| (id.clone(), r.outcome.clone()))
        .collect()
}

fn count_line(values: impl Iterator<Item = String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut parts: Vec<String> = BEHAVIORS
        .iter()
        .map(|b| format!("{b} {}", counts.remove(*b).unwrap_or(0)))
        .collect();
    // Verdicts this tool does not know about are still shown (and fail the gate).
    parts.extend(counts.iter().map(|(b, n)| format!("{b} {n}")));
    parts.join(", ")
}

/// The one-line summary: counts of `behavior`, then of `behaviorClose`.
pub fn summary_line(report: &Report) -> String {
    format!(
        "autobahn: {} cases: {}; close: {}",
        report.cases.len(),
        count_line(report.cases.values().map(|r| r.outcome.behavior.clone())),
        count_line(
            report
                .cases
                .values()
                .map(|r| r.outcome.behavior_close.clone())
        ),
    )
}

/// Cases whose `behavior` or `behaviorClose` is neither OK nor INFORMATIONAL.
pub fn gate_failures(report: &Report) -> Vec<(&CaseId, &CaseResult)> {
    report
        .cases
        .iter()
        .filter(|(_, r)| !r.outcome.is_passing())
        .collect()
}

/// Differences between the expectations and a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// In the run, not expected.
    pub added: Vec<(CaseId, Outcome)>,
    /// Expected, not in the run.
    pub missing: Vec<(CaseId, Outcome)>,
    /// In both with different verdicts: (id, expected, actual).
    pub changed: Vec<(CaseId, Outcome, Outcome)>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.added.len() + self.missing.len() + self.changed.len()
    }
}

/// Compares a run with the expectations. With `subset` (a run of only some
/// cases), expected cases absent from the run are not reported as missing.
pub fn drift(expected: &Expected, actual: &Expected, subset: bool) -> Drift {
    let mut d = Drift::default();
    for (id, got) in actual {
        match expected.get(id) {
            None => d.added.push((id.clone(), got.clone())),
            Some(want) if want != got => d.changed.push((id.clone(), want.clone(), got.clone())),
            Some(_) => {}
        }
    }
    if !subset {
        for (id, want) in expected {
            if !actual.contains_key(id) {
                d.missing.push((id.clone(), want.clone()));
            }
        }
    }
    d
}

/// The expectations after `--update`: the run's verdicts; with `subset`,
/// merged over the old expectations instead of replacing them.
pub fn updated_expected(old: &Expected, actual: &Expected, subset: bool) -> Expected {
    let mut new = if subset { old.clone() } else { Expected::new() };
    new.extend(actual.iter().map(|(k, v)| (k.clone(), v.clone())));
    new
}

/// Command-line options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub index: PathBuf,
    pub expected: PathBuf,
    pub update: bool,
    pub subset: bool,
    pub agent: Option<String>,
}

pub const USAGE: &str = "\
usage: sockeye-autobahn INDEX_JSON EXPECTED_JSON [--update] [--subset] [--agent NAME]

Reads Autobahn's index.json, prints a summary, lists every case whose behavior
or behaviorClose is not OK/INFORMATIONAL, and compares the run with EXPECTED_JSON.

  --update       rewrite EXPECTED_JSON from this run (drift is then not an error)
  --subset       the run covers only some cases: expected cases absent from it
                 are not drift (with --update, merge instead of replace)
  --agent NAME   the agent to check when index.json holds several

Exit status: 0 all cases pass and no drift; 1 failing cases or drift; 2 usage or I/O error.";

/// Parses the arguments after the program name. `Ok(None)` means `--help`.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Option<Options>, String> {
    let mut positional = Vec::new();
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--update" => opts.update = true,
            "--subset" => opts.subset = true,
            "--agent" => {
                opts.agent = Some(args.next().ok_or("--agent needs a value")?);
            }
            s if s.starts_with("--agent=") => opts.agent = Some(s["--agent=".len()..].to_owned()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            _ => positional.push(arg),
        }
    }
    match <[String; 2]>::try_from(positional) {
        Ok([index, expected]) => {
            opts.index = index.into();
            opts.expected = expected.into();
            Ok(Some(opts))
        }
        Err(p) => Err(format!(
            "expected 2 paths (INDEX_JSON EXPECTED_JSON), got {}",
            p.len()
        )),
    }
}

fn report_path(index: &Path, file: Option<&str>) -> String {
    match file {
        Some(f) => index
            .parent()
            .unwrap_or(Path::new(""))
            .join(f)
            .display()
            .to_string(),
        None => "(no report file)".to_owned(),
    }
}

/// Runs the check and writes its findings to `out`. Returns the exit status.
pub fn run(opts: &Options, out: &mut dyn Write) -> Result<i32, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(&opts.index).map_err(|e| io(&opts.index, e))?;
    let report = parse_index(&text, opts.agent.as_deref())
        .map_err(|e| format!("{}: {e}", opts.index.display()))?;
    let expected_text = match std::fs::read_to_string(&opts.expected) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&opts.expected, e)),
    };
    let expected = match &expected_text {
        Some(t) => parse_expected(t).map_err(|e| format!("{}: {e}", opts.expected.display()))?,
        None => Expected::new(),
    };

    let w = |e: std::io::Error| e.to_string();
    writeln!(
        out,
        "autobahn: agent \"{}\" in {}",
        report.agent,
        opts.index.display()
    )
    .map_err(w)?;
    writeln!(out, "{}", summary_line(&report)).map_err(w)?;
    let mut status = 0;
    if report.cases.is_empty() {
        writeln!(out, "autobahn: the report holds no case").map_err(w)?;
        status = 1;
    }

    let failures = gate_failures(&report);
    let width = report
        .cases
        .keys()
        .chain(expected.keys())
        .map(|id| id.0.len())
        .max()
        .unwrap_or(0);
    if !failures.is_empty() {
        writeln!(
            out,
            "autobahn: {} case(s) not OK/INFORMATIONAL:",
            failures.len()
        )
        .map_err(w)?;
        for (id, r) in &failures {
            writeln!(
                out,
                "  {id:width$}  behavior {:<16} close {:<16} {}",
                r.outcome.behavior,
                r.outcome.behavior_close,
                report_path(&opts.index, r.report_file.as_deref())
            )
            .map_err(w)?;
        }
        status = 1;
    }

    let actual = outcomes(&report);
    let d = drift(&expected, &actual, opts.subset);
    let shown = opts.expected.display();
    if expected_text.is_none() {
        writeln!(out, "autobahn: {shown} does not exist yet").map_err(w)?;
    }
    if !d.is_empty() {
        writeln!(
            out,
            "autobahn: drift against {shown}: {} added, {} missing, {} changed",
            d.added.len(),
            d.missing.len(),
            d.changed.len()
        )
        .map_err(w)?;
        // With no expected file every case is "added": listing them says nothing.
        if expected_text.is_some() {
            for (id, o) in &d.added {
                writeln!(out, "  added    {id:width$}  {o}").map_err(w)?;
            }
        }
        for (id, o) in &d.missing {
            writeln!(out, "  missing  {id:width$}  (expected {o})").map_err(w)?;
        }
        for (id, want, got) in &d.changed {
            writeln!(out, "  changed  {id:width$}  {want} -> {got}").map_err(w)?;
        }
    }
    if opts.update {
        let new = render_expected(&updated_expected(&expected, &actual, opts.subset));
        if expected_text.as_deref() != Some(new.as_str()) {
            std::fs::write(&opts.expected, new).map_err(|e| io(&opts.expected, e))?;
            writeln!(out, "autobahn: updated {shown}").map_err(w)?;
        } else {
            writeln!(out, "autobahn: {shown} is up to date").map_err(w)?;
        }
    } else if !d.is_empty() {
        writeln!(
            out,
            "autobahn: if this drift is intended, rerun with --update and commit {shown}"
        )
        .map_err(w)?;
        status = 1;
    }

    let verdict = if status == 0 { "PASS" } else { "FAIL" };
    writeln!(
        out,
        "autobahn: {verdict}: {} failing case(s), {} drifted case(s){}",
        failures.len(),
        d.len(),
        if opts.update && !d.is_empty() {
            " (expectations updated)"
        } else {
            ""
        }
    )
    .map_err(w)?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{
      "sockeye": {
        "1.1.10": {"behavior": "OK", "behaviorClose": "OK", "duration": 2, "remoteCloseCode": 1000, "reportfile": "sockeye_case_1_1_10.json"},
        "1.1.9": {"behavior": "OK", "behaviorClose": "OK", "duration": 1, "remoteCloseCode": 1000, "reportfile": "sockeye_case_1_1_9.json"},
        "10.1.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 1, "remoteCloseCode": null, "reportfile": "sockeye_case_10_1_1.json"},
        "2.1": {"behavior": "NON-STRICT", "behaviorClose": "OK", "duration": 1, "remoteCloseCode": 1000, "reportfile": "sockeye_case_2_1.json"},
        "6.4.1": {"behavior": "OK", "behaviorClose": "FAILED", "duration": 2002, "remoteCloseCode": null, "reportfile": "sockeye_case_6_4_1.json"},
        "7.1.6": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL", "duration": 5, "remoteCloseCode": 1000, "reportfile": "sockeye_case_7_1_6.json"},
        "12.1.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK", "duration": 0, "remoteCloseCode": 1000, "reportfile": "sockeye_case_12_1_1.json"}
      }
    }"#;

    fn ids(v: &[&str]) -> Vec<CaseId> {
        v.iter().map(|s| CaseId::new(*s)).collect()
    }

    #[test]
    fn case_ids_sort_numerically() {
        let mut v = ids(&[
            "10.1.1", "1.1.10", "1.2.1", "1.1.9", "2.1", "1.1", "9.10.2", "9.2.10",
        ]);
        v.sort();
        assert_eq!(
            v,
            ids(&["1.1", "1.1.9", "1.1.10", "1.2.1", "2.1", "9.2.10", "9.10.2", "10.1.1"])
        );
    }

    #[test]
    fn case_id_order_is_total_and_consistent_with_eq() {
        assert_ne!(
            CaseId::new("1.01").cmp(&CaseId::new("1.1")),
            Ordering::Equal
        );
        assert!(CaseId::new("1.2") < CaseId::new("1.x"));
        assert!(CaseId::new("1.a") < CaseId::new("1.b"));
        assert_eq!(CaseId::new("3.4").cmp(&CaseId::new("3.4")), Ordering::Equal);
    }

    #[test]
    fn parses_index_in_numeric_order() {
        let r = parse_index(INDEX, None).unwrap();
        assert_eq!(r.agent, "sockeye");
        let order: Vec<&str> = r.cases.keys().map(CaseId::as_str).collect();
        assert_eq!(
            order,
            ["1.1.9", "1.1.10", "2.1", "6.4.1", "7.1.6", "10.1.1", "12.1.1"]
        );
        let c = &r.cases[&CaseId::new("10.1.1")];
        assert_eq!(c.remote_close_code, None);
        assert_eq!(c.duration, Some(1));
        assert_eq!(c.report_file.as_deref(), Some("sockeye_case_10_1_1.json"));
        assert_eq!(r.cases[&CaseId::new("1.1.9")].remote_close_code, Some(1000));
    }

    #[test]
    fn agent_selection() {
        let two = r#"{"a": {"1.1.1": {"behavior": "OK", "behaviorClose": "OK"}}, "b": {}}"#;
        assert!(parse_index(two, None)
            .unwrap_err()
            .contains("several agents (a, b)"));
        assert_eq!(parse_index(two, Some("a")).unwrap().cases.len(), 1);
        assert!(parse_index(two, Some("c"))
            .unwrap_err()
            .contains("agent \"c\" not in report"));
        assert!(parse_index("{}", None).unwrap_err().contains("no agent"));
    }

    #[test]
    fn malformed_index_is_an_error() {
        assert!(parse_index("[]", None).unwrap_err().contains("JSON object"));
        assert!(parse_index("{", None).unwrap_err().contains("invalid JSON"));
        let no_close = r#"{"a": {"1.1.1": {"behavior": "OK"}}}"#;
        assert!(parse_index(no_close, None)
            .unwrap_err()
            .contains("missing \"behaviorClose\""));
        let bad = r#"{"a": {"1.1.1": {"behavior": 3, "behaviorClose": "OK"}}}"#;
        assert!(parse_index(bad, None)
            .unwrap_err()
            .contains("should be a string"));
    }

    #[test]
    fn summary_counts_both_verdicts() {
        let r = parse_index(INDEX, None).unwrap();
        assert_eq!(
            summary_line(&r),
            "autobahn: 7 cases: OK 4, INFORMATIONAL 1, NON-STRICT 1, FAILED 0, UNIMPLEMENTED 1; \
             close: OK 5, INFORMATIONAL 1, NON-STRICT 0, FAILED 1, UNIMPLEMENTED 0"
        );
    }

    #[test]
    fn unknown_verdicts_are_counted_and_fail() {
        let idx = r#"{"a": {"1.1.1": {"behavior": "WRONG CODE", "behaviorClose": "OK"}}}"#;
        let r = parse_index(idx, None).unwrap();
        assert!(summary_line(&r).contains("UNIMPLEMENTED 0, WRONG CODE 1;"));
        assert_eq!(gate_failures(&r).len(), 1);
    }

    #[test]
    fn gate_rejects_everything_but_ok_and_informational() {
        let r = parse_index(INDEX, None).unwrap();
        let failing: Vec<&str> = gate_failures(&r)
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(failing, ["2.1", "6.4.1", "12.1.1"]);
        assert!(is_passing("OK") && is_passing("INFORMATIONAL"));
        assert!(!is_passing("NON-STRICT") && !is_passing("FAILED") && !is_passing("UNIMPLEMENTED"));
    }

    #[test]
    fn drift_finds_added_missing_changed() {
        let mut expected = Expected::new();
        expected.insert(CaseId::new("1.1.9"), Outcome::new("OK", "OK"));
        expected.insert(CaseId::new("2.1"), Outcome::new("OK", "OK"));
        expected.insert(CaseId::new("3.1"), Outcome::new("OK", "OK"));
        let mut actual = Expected::new();
        actual.insert(CaseId::new("1.1.9"), Outcome::new("OK", "OK"));
        actual.insert(CaseId::new("2.1"), Outcome::new("NON-STRICT", "OK"));
        actual.insert(CaseId::new("4.1"), Outcome::new("OK", "OK"));

        let d = drift(&expected, &actual, false);
        assert_eq!(
            d.added,
            vec![(CaseId::new("4.1"), Outcome::new("OK", "OK"))]
        );
        assert_eq!(
            d.missing,
            vec![(CaseId::new("3.1"), Outcome::new("OK", "OK"))]
        );
        assert_eq!(
            d.changed,
            vec![(
                CaseId::new("2.1"),
                Outcome::new("OK", "OK"),
                Outcome::new("NON-STRICT", "OK")
            )]
        );
        assert_eq!(d.len(), 3);

        let sub = drift(&expected, &actual, true);
        assert!(sub.missing.is_empty());
        assert_eq!(sub.len(), 2);

        assert!(drift(&actual, &actual, false).is_empty());
    }

    #[test]
    fn update_replaces_or_merges() {
        let mut old = Expected::new();
        old.insert(CaseId::new("1.1.1"), Outcome::new("OK", "OK"));
        old.insert(CaseId::new("2.1"), Outcome::new("OK", "OK"));
        let mut actual = Expected::new();
        actual.insert(CaseId::new("2.1"), Outcome::new("FAILED", "OK"));
        assert_eq!(updated_expected(&old, &actual, false), actual);
        let merged = updated_expected(&old, &actual, true);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[&CaseId::new("2.1")], Outcome::new("FAILED", "OK"));
    }

    #[test]
    fn expected_file_round_trips_in_numeric_order() {
        let r = parse_index(INDEX, None).unwrap();
        let text = render_expected(&outcomes(&r));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "{");
        assert_eq!(
            lines[1],
            r#"  "1.1.9": {"behavior": "OK", "behaviorClose": "OK"},"#
        );
        assert_eq!(
            lines[2],
            r#"  "1.1.10": {"behavior": "OK", "behaviorClose": "OK"},"#
        );
        assert_eq!(
            lines[7],
            r#"  "12.1.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK"}"#
        );
        assert_eq!(lines[8], "}");
        assert_eq!(parse_expected(&text).unwrap(), outcomes(&r));
        assert_eq!(render_expected(&Expected::new()), "{}\n");
        assert!(parse_expected("{}").unwrap().is_empty());
    }

    #[test]
    fn args() {
        let p = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        let o = p(&["i.json", "e.json", "--update", "--agent", "sockeye"])
            .unwrap()
            .unwrap();
        assert_eq!(o.index, PathBuf::from("i.json"));
        assert_eq!(o.expected, PathBuf::from("e.json"));
        assert!(o.update && !o.subset);
        assert_eq!(o.agent.as_deref(), Some("sockeye"));
        let o = p(&["--subset", "--agent=x", "i", "e"]).unwrap().unwrap();
        assert!(o.subset && !o.update);
        assert_eq!(o.agent.as_deref(), Some("x"));
        assert_eq!(p(&["--help"]).unwrap(), None);
        assert!(p(&["i.json"]).is_err());
        assert!(p(&["a", "b", "c"]).is_err());
        assert!(p(&["a", "b", "--bogus"]).is_err());
        assert!(p(&["a", "b", "--agent"]).is_err());
    }
}
