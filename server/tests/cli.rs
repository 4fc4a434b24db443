//! The `easel` binary as a host runs it: help text, config errors, the listening line, logs on
//! stderr, and a graceful SIGTERM that exits 0.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EASEL: &str = env!("CARGO_BIN_EXE_easel");

/// A fresh data directory for one test's server.
fn data_dir(test: &str) -> String {
    let dir = std::env::temp_dir().join(format!("easel-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.to_string_lossy().into_owned()
}

#[test]
fn serve_help_documents_every_flag() {
    let output = Command::new(EASEL).args(["serve", "--help"]).output().expect("running easel");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--bind",
        "--port",
        "--tick-rate",
        "--assets-dir",
        "--allowed-origin",
        "--log-level",
        "--log-format",
        "--config",
        "--data-dir",
    ] {
        assert!(help.contains(flag), "`easel serve --help` should document {flag}:\n{help}");
    }
}

#[test]
fn a_bad_setting_stops_the_server_with_a_clear_error() {
    let output = Command::new(EASEL).args(["serve", "--tick-rate", "0"]).output().expect("running easel");
    assert!(!output.status.success(), "a zero tick rate must be refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tick_rate must be between 1 and 120"), "unclear error: {stderr}");
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_code_zero() {
    let mut server = Command::new(EASEL)
        .args(["serve", "--port", "0", "--log-level", "warn"])
        .args(["--data-dir", &data_dir("sigterm")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting easel");
    let stdout = server.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("reading the first line");
    assert!(line.starts_with("Easel listening on http://127.0.0.1:"), "unexpected first line: {line:?}");

    let killed = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().expect("running kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().expect("waiting for easel") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("easel did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn logs_go_to_stderr_and_stdout_says_only_where_the_server_listens() {
    let mut server = Command::new(EASEL)
        .args(["serve", "--port", "0", "--log-level", "info"])
        .args(["--data-dir", &data_dir("streams")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting easel");
    let mut stdout = BufReader::new(server.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("reading the first line");
    assert!(line.starts_with("Easel listening on http://127.0.0.1:"), "unexpected first line: {line:?}");
    let killed = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().expect("running kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.try_wait().expect("waiting for easel").is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("easel did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut rest, mut logs) = (String::new(), String::new());
    stdout.read_to_string(&mut rest).expect("reading stdout");
    server.stderr.take().expect("piped stderr").read_to_string(&mut logs).expect("reading stderr");
    assert_eq!(rest, "", "nothing but the listening line on stdout");
    assert!(logs.contains("shutting down"), "the shutdown is logged on stderr: {logs:?}");
}
