//! `cargo xtask autobahn`: Autobahn|Testsuite's fuzzingclient (PyPI `autobahntestsuite`, which
//! needs Python 2.7) against the server's own WebSocket edge, compared with the committed
//! `tests/autobahn/expected.json` the way tungstenite checks its own results; then against the
//! production route `/ws`, summarised.
//!
//! The edge is reached through `/autobahn-echo`, which exists only in a build with the server's
//! `autobahn-echo` feature: the same handshake checks, limits and closing handshake as `/ws`,
//! but an echo instead of Easel's protocol (binary only, `Hello` first), so that every case
//! tests the edge rather than the protocol.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::process::{self, Owned};
use crate::{cargo, step, target_dir};

/// The testsuite's version, pinned: its verdicts are what `expected.json` records.
const TESTSUITE: &str = "autobahntestsuite==25.10.1";
/// The last virtualenv that runs on Python 2.7.
const VIRTUALENV: &str = "virtualenv<20.22";
/// A whole run of the suite takes a few minutes; this bounds a hung one.
const RUN_BUDGET: Duration = Duration::from_secs(30 * 60);
/// Verdicts that need no entry in `expected.json`.
const PASSING: [&str; 3] = ["OK", "NON-STRICT", "INFORMATIONAL"];
const PASSING_CLOSE: [&str; 2] = ["OK", "INFORMATIONAL"];

/// The case groups left out of every run, and why (also written in `expected.json`).
const EXCLUDED: [(&str, &str); 2] = [
    ("12.*", "permessage-deflate: Easel negotiates no extension (its messages are bincode, already compact)"),
    ("13.*", "permessage-deflate: Easel negotiates no extension (its messages are bincode, already compact)"),
];

/// Which routes a run covers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The edge's echo only, checked against `expected.json` (what `cargo xtask test` runs).
    Edge,
    /// The echo, checked, then `/ws`, summarised for the record.
    EdgeAndProduction,
}

/// A Python 2.7 interpreter, if this machine has one (the suite runs on nothing newer).
pub fn available() -> bool {
    python27().is_some()
}

/// Runs the suite against the echo (and `/ws` for [`Scope::EdgeAndProduction`]); fails when the
/// echo's results differ from `tests/autobahn/expected.json` or show any unclean close or wrong
/// close code.
pub fn run(root: &Path, scope: Scope) -> Result<()> {
    let Some(python) = python27() else {
        bail!(
            "Autobahn|Testsuite needs Python 2.7, and none was found (looked for ~/.pyenv/versions/2.7.18 and \
             python2.7 on PATH). With one, this command installs the suite in target/autobahn/venv, runs its \
             fuzzingclient against the server's WebSocket edge and compares the verdicts with \
             tests/autobahn/expected.json."
        )
    };
    let wstest = install_testsuite(root, &python)?;
    let server = build_server(root)?;
    let work = target_dir(root).join("autobahn");

    step("Autobahn|Testsuite against the WebSocket edge (/autobahn-echo)");
    let echo = run_suite(&server, &wstest, &work, "autobahn-echo")?;
    let expected_path = root.join("tests").join("autobahn").join("expected.json");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&expected_path).with_context(|| format!("reading {}", expected_path.display()))?,
    )?;
    let problems = compare(&echo, &expected);
    print_counts("/autobahn-echo", &echo);

    if scope == Scope::EdgeAndProduction {
        step("Autobahn|Testsuite against the production route (/ws), for the record");
        let production = run_suite(&server, &wstest, &work, "ws")?;
        print_counts("/ws", &production);
        print_differences(&echo, &production);
    }

    if !problems.is_empty() {
        for problem in &problems {
            println!("  {problem}");
        }
        bail!(
            "{} Autobahn results differ from tests/autobahn/expected.json (reports in {})",
            problems.len(),
            work.join("autobahn-echo").display()
        );
    }
    println!("Autobahn: the edge's results match tests/autobahn/expected.json");
    Ok(())
}

/// One case's verdict, as the suite's `index.json` gives it.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    behavior: String,
    close: String,
    close_code: Option<u64>,
}

/// The checks of `expected.json`: every case passes or is listed with exactly its verdict, no
/// close is unclean or has a wrong code, and nothing listed is stale.
fn compare(results: &BTreeMap<String, Verdict>, expected: &Value) -> Vec<String> {
    let listed = expected["cases"].as_object().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for (case, verdict) in results {
        if verdict.close == "UNCLEAN" || verdict.close == "WRONG CODE" {
            problems
                .push(format!("case {case}: close {} (code {:?}): never allowed", verdict.close, verdict.close_code));
            continue;
        }
        let passes = PASSING.contains(&verdict.behavior.as_str()) && PASSING_CLOSE.contains(&verdict.close.as_str());
        match listed.get(case) {
            Some(entry) => {
                let wanted = Verdict {
                    behavior: entry["behavior"].as_str().unwrap_or_default().to_owned(),
                    close: entry["behaviorClose"].as_str().unwrap_or_default().to_owned(),
                    close_code: entry["remoteCloseCode"].as_u64(),
                };
                if wanted != *verdict {
                    problems.push(format!("case {case}: expected {wanted:?}, got {verdict:?}"));
                }
            }
            None if !passes => problems.push(format!("case {case}: {verdict:?}, not listed in expected.json")),
            None => {}
        }
    }
    for case in listed.keys() {
        if !results.contains_key(case) {
            problems.push(format!("case {case} is listed in expected.json but was not run"));
        }
    }
    problems
}

fn print_counts(route: &str, results: &BTreeMap<String, Verdict>) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for verdict in results.values() {
        *counts.entry(format!("{} / close {}", verdict.behavior, verdict.close)).or_default() += 1;
    }
    println!("{route}: {} cases", results.len());
    for (verdict, count) in counts {
        println!("  {count:>4}  {verdict}");
    }
}

/// Cases whose verdict on `/ws` differs from the echo's (binary only, `Hello` first).
fn print_differences(echo: &BTreeMap<String, Verdict>, production: &BTreeMap<String, Verdict>) {
    let mut differing: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (case, verdict) in production {
        if echo.get(case) != Some(verdict) {
            let key = format!(
                "{} / close {} / code {}",
                verdict.behavior,
                verdict.close,
                verdict.close_code.map_or("-".to_owned(), |c| c.to_string())
            );
            differing.entry(key).or_default().push(case);
        }
    }
    println!("/ws differs from the edge's echo in {} cases:", differing.values().map(Vec::len).sum::<usize>());
    for (verdict, cases) in differing {
        let shown: Vec<&str> = cases.iter().take(6).copied().collect();
        let more = if cases.len() > 6 { format!(" and {} more", cases.len() - 6) } else { String::new() };
        println!("  {:>4}  {verdict}: {}{more}", cases.len(), shown.join(", "));
    }
}

/// Starts the server, runs the fuzzingclient against `route` and reads its verdicts.
fn run_suite(server: &Path, wstest: &Path, work: &Path, route: &str) -> Result<BTreeMap<String, Verdict>> {
    let reports = work.join(route);
    let _ = std::fs::remove_dir_all(&reports);
    std::fs::create_dir_all(&reports)?;
    let (_server, reach) = process::start_server(server, &["--log-level".to_owned(), "error".to_owned()])?;
    let excluded: Vec<&str> = EXCLUDED.iter().map(|(cases, _)| *cases).collect();
    let spec = json!({
        "outdir": reports,
        "servers": [{ "agent": "easel", "url": format!("ws://{}/{route}", reach.address()) }],
        "cases": ["*"],
        "exclude-cases": excluded,
        "exclude-agent-cases": {},
    });
    let spec_path = work.join(format!("fuzzingclient-{route}.json"));
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec)?)?;
    let mut suite = Owned(
        Command::new(wstest)
            .args(["-m", "fuzzingclient", "-s"])
            .arg(&spec_path)
            .current_dir(work)
            .stdout(Stdio::null())
            .spawn()
            .context("starting wstest")?,
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = suite.0.try_wait()? {
            break status;
        }
        if started.elapsed() > RUN_BUDGET {
            bail!("watchdog: the Autobahn run exceeded {RUN_BUDGET:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("wstest failed ({status})");
    }
    println!("  ran in {:.0} s", started.elapsed().as_secs_f64());
    read_index(&reports.join("index.json"))
}

fn read_index(path: &Path) -> Result<BTreeMap<String, Verdict>> {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {} (did the suite run?)", path.display()))?,
    )?;
    let cases = index["easel"].as_object().context("no results for agent easel")?;
    Ok(cases
        .iter()
        .map(|(case, result)| {
            let verdict = Verdict {
                behavior: result["behavior"].as_str().unwrap_or_default().to_owned(),
                close: result["behaviorClose"].as_str().unwrap_or_default().to_owned(),
                close_code: result["remoteCloseCode"].as_u64(),
            };
            (case.clone(), verdict)
        })
        .collect())
}

/// Builds the server with its echo endpoint (debug: the edge's behaviour is what is tested, not
/// its speed), keeps that binary apart, and builds the plain one again so that no binary in
/// `target/` that a host might copy has the echo.
fn build_server(root: &Path) -> Result<PathBuf> {
    step("building the server with its autobahn-echo endpoint");
    let build = |features: &[&str]| -> Result<()> {
        let status = cargo()
            .args(["build", "--package", "easel-server", "--bin", "easel", "--locked"])
            .args(features)
            .status()?;
        if !status.success() {
            bail!("building the server failed");
        }
        Ok(())
    };
    build(&["--features", "autobahn-echo"])?;
    let work = target_dir(root).join("autobahn");
    std::fs::create_dir_all(&work)?;
    let echo = work.join("easel-with-echo");
    std::fs::copy(target_dir(root).join("debug").join("easel"), &echo).context("keeping the echo build")?;
    build(&[])?;
    Ok(echo)
}

/// A Python 2.7 interpreter: the one pyenv keeps on these machines, or `python2.7` on PATH.
fn python27() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".pyenv/versions/2.7.18/bin/python"));
    }
    candidates.push(PathBuf::from("python2.7"));
    candidates.into_iter().find(|python| {
        Command::new(python).arg("--version").output().is_ok_and(|o| {
            let said = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&said).contains("Python 2.7")
        })
    })
}

/// The suite's `wstest` in a virtualenv under `target/autobahn`, installed on first use.
fn install_testsuite(root: &Path, python: &Path) -> Result<PathBuf> {
    let work = target_dir(root).join("autobahn");
    let venv = work.join("venv");
    let wstest = venv.join("bin").join("wstest");
    if wstest.exists() {
        return Ok(wstest);
    }
    step(&format!("installing {TESTSUITE} for Python 2.7 into {}", venv.display()));
    let bootstrap = work.join("bootstrap");
    let ok = |command: &mut Command, what: &str| -> Result<()> {
        if !command.status().with_context(|| what.to_owned())?.success() {
            bail!("{what} failed");
        }
        Ok(())
    };
    ok(
        Command::new(python).args(["-m", "pip", "install", "--quiet", "--target"]).arg(&bootstrap).arg(VIRTUALENV),
        "installing virtualenv",
    )?;
    ok(
        Command::new(python).args(["-m", "virtualenv", "--quiet"]).arg(&venv).env("PYTHONPATH", &bootstrap),
        "creating the virtualenv",
    )?;
    ok(Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", TESTSUITE]), "installing the suite")?;
    Ok(wstest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(behavior: &str, close: &str, code: Option<u64>) -> Verdict {
        Verdict { behavior: behavior.into(), close: close.into(), close_code: code }
    }

    #[test]
    fn passing_cases_need_no_entry_and_the_rest_must_match_theirs_exactly() {
        let expected = json!({ "cases": {
            "9.1.6": { "behavior": "FAILED", "behaviorClose": "OK", "remoteCloseCode": 1009, "reason": "over 16 KiB" },
        }});
        let mut results = BTreeMap::from([
            ("1.1.1".to_owned(), verdict("OK", "OK", Some(1000))),
            ("2.9".to_owned(), verdict("NON-STRICT", "OK", Some(1000))),
            ("9.1.6".to_owned(), verdict("FAILED", "OK", Some(1009))),
        ]);
        assert!(compare(&results, &expected).is_empty());
        results.insert("9.1.6".to_owned(), verdict("FAILED", "OK", Some(1002)));
        assert_eq!(compare(&results, &expected).len(), 1, "a listed case with another verdict");
        results.insert("9.1.6".to_owned(), verdict("FAILED", "OK", Some(1009)));
        results.insert("5.1".to_owned(), verdict("FAILED", "OK", Some(1002)));
        assert_eq!(compare(&results, &expected).len(), 1, "a failing case not listed");
        results.remove("5.1");
        results.remove("9.1.6");
        assert_eq!(compare(&results, &expected).len(), 1, "a listed case that did not run");
    }

    #[test]
    fn unclean_closes_and_wrong_codes_are_never_expected() {
        let expected = json!({ "cases": {
            "7.1.1": { "behavior": "OK", "behaviorClose": "UNCLEAN", "remoteCloseCode": null },
        }});
        let results = BTreeMap::from([("7.1.1".to_owned(), verdict("OK", "UNCLEAN", None))]);
        assert_eq!(compare(&results, &expected).len(), 1);
        let results = BTreeMap::from([("7.9.1".to_owned(), verdict("OK", "WRONG CODE", Some(1000)))]);
        assert_eq!(compare(&results, &json!({})).len(), 1);
    }
}
