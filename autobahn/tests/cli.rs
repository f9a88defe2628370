//! Runs the `sockeye-autobahn` binary on real wstest reports
//! (`tests/fixtures/`, made by `tests/fixtures/regen.sh`).
//!
//! Every run of the binary is bounded: it is killed, and the test fails saying so, if it has not
//! exited within `RUN_LIMIT`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound on one run of the checker (it reads a few small JSON files).
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sockeye-autobahn-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Reads `pipe` to its end on a thread; the bytes come back over the returned channel.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// Runs the checker, for at most `RUN_LIMIT`; returns (exit code, stdout, stderr).
fn check(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-autobahn"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockeye-autobahn");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let until = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sockeye-autobahn") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockeye-autobahn {args:?} did not exit within {RUN_LIMIT:?} (killed)");
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The pipes close when the process exits (it starts no children of its own).
    let output = |rx: mpsc::Receiver<Vec<u8>>, name: &str| {
        let bytes = rx
            .recv_timeout(RUN_LIMIT)
            .unwrap_or_else(|_| panic!("sockeye-autobahn's {name} did not end after it exited"));
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"))
    };
    (
        status.code().expect("sockeye-autobahn exited with a code"),
        output(stdout, "stdout"),
        output(stderr, "stderr"),
    )
}

#[test]
fn passing_report_matching_expectations_exits_0() {
    let (code, out, err) = check(&[
        &fixture("index-client.json"),
        &fixture("expected-client.json"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("agent \"AutobahnPython/0.10.9\""), "{out}");
    assert!(
        out.contains(
            "autobahn: 5 cases: OK 4, INFORMATIONAL 1, NON-STRICT 0, FAILED 0, UNIMPLEMENTED 0; \
             close: OK 4, INFORMATIONAL 1, NON-STRICT 0, FAILED 0, UNIMPLEMENTED 0\n"
        ),
        "{out}"
    );
    assert!(
        out.ends_with("autobahn: PASS: 0 failing case(s), 0 drifted case(s)\n"),
        "{out}"
    );
}

#[test]
fn several_agents_need_agent_flag() {
    let expected = scratch("several.json");
    let (code, _, err) = check(&[&fixture("index-echo.json"), &expected]);
    assert_eq!(code, 2);
    assert!(
        err.contains("several agents (AutobahnEcho, BrokenEcho)"),
        "{err}"
    );
}

#[test]
fn failing_cases_are_listed_with_report_files_in_numeric_order() {
    let expected = scratch("broken.json");
    // No expected file yet, no --update: failing cases and drift.
    let (code, out, err) = check(&[
        &fixture("index-echo.json"),
        &expected,
        &"--agent",
        &"BrokenEcho",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "autobahn: 15 cases: OK 7, INFORMATIONAL 2, NON-STRICT 0, FAILED 4, UNIMPLEMENTED 2; \
             close: OK 11, INFORMATIONAL 2, NON-STRICT 0, FAILED 2, UNIMPLEMENTED 0"
        ),
        "{out}"
    );
    assert!(
        out.contains("autobahn: 6 case(s) not OK/INFORMATIONAL:"),
        "{out}"
    );
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" behavior "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["1.1.3", "6.4.1", "6.6.1", "9.1.1", "12.1.1", "13.1.1"]
    );
    let report = fixture("brokenecho_case_6_4_1.json");
    assert!(out.contains(&report.display().to_string()), "{out}");
    assert!(out.contains("does not exist yet"), "{out}");
    assert!(out.contains("drift against"), "{out}");
    assert!(!expected.exists());

    // --update writes the expectations (sorted numerically) but the gate still fails.
    let (code, out, _) = check(&[
        &fixture("index-echo.json"),
        &expected,
        &"--agent=BrokenEcho",
        &"--update",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("autobahn: updated"), "{out}");
    let text = std::fs::read_to_string(&expected).unwrap();
    let ids: Vec<&str> = text.lines().filter_map(|l| l.split('"').nth(1)).collect();
    assert_eq!(
        ids,
        [
            "1.1.1", "1.1.2", "1.1.3", "2.9", "2.10", "2.11", "5.9", "5.10", "6.4.1", "6.6.1",
            "7.1.6", "7.13.1", "9.1.1", "12.1.1", "13.1.1"
        ]
    );
    assert!(text.contains(r#"  "6.4.1": {"behavior": "FAILED", "behaviorClose": "FAILED"},"#));

    // Now there is no drift; the failing cases alone fail the run.
    let (code, out, _) = check(&[
        &fixture("index-echo.json"),
        &expected,
        &"--agent",
        &"BrokenEcho",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("drift against"), "{out}");
    assert!(
        out.contains("FAIL: 6 failing case(s), 0 drifted case(s)"),
        "{out}"
    );

    let (_, out, _) = check(&[
        &fixture("index-echo.json"),
        &expected,
        &"--agent",
        &"BrokenEcho",
        &"--update",
    ]);
    assert!(out.contains("is up to date"), "{out}");
}

#[test]
fn drift_is_reported_and_fails_unless_update() {
    let expected = scratch("drift.json");
    std::fs::write(
        &expected,
        r#"{
  "1.1.1": {"behavior": "OK", "behaviorClose": "OK"},
  "2.10": {"behavior": "NON-STRICT", "behaviorClose": "OK"},
  "5.10": {"behavior": "OK", "behaviorClose": "OK"},
  "7.1.6": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL"},
  "10.1.1": {"behavior": "OK", "behaviorClose": "OK"}
}
"#,
    )
    .unwrap();
    let (code, out, _) = check(&[&fixture("index-client.json"), &expected]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("drift against"), "{out}");
    assert!(out.contains("1 added, 1 missing, 1 changed"), "{out}");
    assert!(out.contains("  added    9.1.1   OK/OK\n"), "{out}");
    assert!(
        out.contains("  missing  10.1.1  (expected OK/OK)\n"),
        "{out}"
    );
    assert!(
        out.contains("  changed  2.10    NON-STRICT/OK -> OK/OK\n"),
        "{out}"
    );

    // A partial run: expected cases it did not run are not "missing".
    let (code, out, _) = check(&[&fixture("index-client.json"), &expected, &"--subset"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 added, 0 missing, 1 changed"), "{out}");

    // --subset --update merges: 10.1.1 stays.
    let (code, out, _) = check(&[
        &fixture("index-client.json"),
        &expected,
        &"--subset",
        &"--update",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(expectations updated)"), "{out}");
    let text = std::fs::read_to_string(&expected).unwrap();
    assert!(
        text.contains(r#""10.1.1""#) && text.contains(r#""9.1.1""#),
        "{text}"
    );

    // A plain --update replaces: now identical to the committed fixture.
    let (code, out, _) = check(&[&fixture("index-client.json"), &expected, &"--update"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(&expected).unwrap(),
        std::fs::read_to_string(fixture("expected-client.json")).unwrap()
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    let (code, _, err) = check(&[&"only-one.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("usage: sockeye-autobahn"), "{err}");
    let (code, _, err) = check(&[&"/nonexistent/index.json", &"e.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/index.json"), "{err}");
    let (code, out, _) = check(&[&"--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("usage:"), "{out}");
}
