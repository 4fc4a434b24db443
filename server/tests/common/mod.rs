//! The `easel` binary run as a host runs it: started on 127.0.0.1 with a data directory, its
//! listening line read, and killed if a test ends before the server does.
// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

pub const EASEL: &str = env!("CARGO_BIN_EXE_easel");
/// Every wait on the server in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Child,
    /// Its WebSocket URL (`wss://` when it serves TLS).
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `easel serve` on `data_dir` with `flags` (a port among them), logging errors only.
pub fn start(data_dir: &str, flags: &[&str]) -> Server {
    spawn(data_dir, &[&["--log-level", "error"], flags].concat(), Stdio::inherit())
}

/// Starts `easel serve` as `start` does, logging at `info` to a pipe the test reads.
pub fn start_logging(data_dir: &str, flags: &[&str]) -> (Server, ChildStderr) {
    let mut server = spawn(data_dir, &[&["--log-level", "info"], flags].concat(), Stdio::piped());
    let logs = server.child.stderr.take().expect("stderr");
    (server, logs)
}

fn spawn(data_dir: &str, flags: &[&str], stderr: Stdio) -> Server {
    let mut child = Command::new(EASEL)
        .args(["serve", "--data-dir", data_dir])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("starting easel");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let base = line.trim().strip_prefix("Easel listening on ").expect("listening line");
    // http -> ws, https -> wss.
    Server { child, url: format!("{}/ws", base.replacen("http", "ws", 1)) }
}
