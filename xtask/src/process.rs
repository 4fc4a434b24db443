//! The processes a command starts and watches: a server it owns (stopped by PID), the bots
//! (`easel-bot`) at `nice 10`, and what `/proc` and the server's `/metrics` say about them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// A process we started, killed (by PID) if still running when dropped.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `binary serve` on 127.0.0.1 and a free port, with no pages and a fresh data
/// directory, plus `args`; returns it and how to reach it.
pub fn start_server(binary: &Path, args: &[String]) -> Result<(Owned, Reach)> {
    let assets = std::env::temp_dir().join("easel-xtask-assets");
    std::fs::create_dir_all(&assets)?;
    let data = std::env::temp_dir().join(format!("easel-xtask-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut server = Owned(
        Command::new(binary)
            .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--assets-dir"])
            .arg(&assets)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the server")?,
    );
    let mut first_line = String::new();
    BufReader::new(server.0.stdout.take().context("server stdout")?).read_line(&mut first_line)?;
    let base = first_line.trim().strip_prefix("Easel listening on ").context("no listening line")?.to_owned();
    // Over TLS, the certificate is the one the arguments name.
    let certificate = args.iter().position(|a| a == "--tls-cert").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    Ok((server, Reach { base, certificate }))
}

/// Starts the bots at `nice 10` and returns them with a channel of their output lines.
pub fn start_bots(binary: &Path, args: &[String]) -> Result<(Owned, mpsc::Receiver<String>)> {
    let mut bots = Owned(
        Command::new("nice")
            .args(["-n", "10"])
            .arg(binary)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the bots")?,
    );
    let (lines_tx, lines) = mpsc::channel();
    let stdout = bots.0.stdout.take().context("bot stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((bots, lines))
}

/// Sends SIGTERM and waits up to 10 s for the exit, then kills.
pub fn stop_gracefully(server: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn process_ticks(pid: u32) -> Result<u64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after its ')' are plain.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// (busy, total, steal) jiffies of the whole machine from `/proc/stat`.
pub fn machine_ticks() -> Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let values: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().sum();
    // idle + iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    let steal = values.get(7).copied().unwrap_or(0);
    Ok((total - idle, total, steal))
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
pub fn read_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// The file descriptors a process has open.
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("reading /proc/{pid}/fd"))?.count())
}

pub fn http_get(reach: &Reach, path: &str) -> Result<String> {
    let address = reach.address();
    let mut tcp = TcpStream::connect(address)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    match &reach.certificate {
        None => {
            tcp.write_all(request.as_bytes())?;
            tcp.read_to_end(&mut response)?;
        }
        Some(certificate) => {
            let mut stream = rustls::StreamOwned::new(tls_client(certificate)?, tcp);
            stream.write_all(request.as_bytes())?;
            // A server may close without TLS's close_notify once the response is out.
            match stream.read_to_end(&mut response) {
                Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => return Err(e.into()),
                _ => {}
            }
        }
    }
    let response = String::from_utf8_lossy(&response);
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}

/// A TLS client session to 127.0.0.1 that trusts only `certificate` (PEM).
fn tls_client(certificate: &Path) -> Result<rustls::ClientConnection> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_file_iter(certificate)? {
        roots.add(der?)?;
    }
    // ring, as the server (aws-lc-rs needs cmake and nasm to build).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rustls::ClientConnection::new(Arc::new(config), rustls::pki_types::ServerName::try_from("127.0.0.1")?)?)
}

/// How the harness and the bots reach a started server: its base URL (`http://…` or
/// `https://…`) and, over TLS, the certificate it presents, which they trust.
#[derive(Clone)]
pub struct Reach {
    pub base: String,
    pub certificate: Option<PathBuf>,
}

impl Reach {
    /// `host:port`.
    pub fn address(&self) -> &str {
        self.base.split_once("://").map_or(self.base.as_str(), |(_, address)| address)
    }

    /// `easel-bot`'s flags that reach the server.
    pub fn bot_args(&self) -> Vec<String> {
        let mut args = vec!["--server".to_owned(), self.base.clone()];
        if let Some(certificate) = &self.certificate {
            args.extend(["--trust-cert".to_owned(), certificate.display().to_string()]);
        }
        args
    }
}

/// A counter or gauge from the server's `/metrics` text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// p50 / p99 / max in ms between two readings of the server's histogram `name` (seconds); each
/// figure is the upper bound of its bucket (≤ 50% above the true value).
pub fn histogram_percentiles(name: &str, start: &str, end: &str) -> Value {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(prefix.as_str())?;
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    };
    let (a, b) = (buckets(start), buckets(end));
    let cumulative: Vec<(f64, f64)> = b.iter().zip(&a).map(|((bound, cb), (_, ca))| (*bound, cb - ca)).collect();
    let total = cumulative.last().map_or(0.0, |(_, c)| *c);
    if total == 0.0 {
        return json!({ "p50": null, "p99": null, "max": null });
    }
    let at = |q: f64| cumulative.iter().find(|(_, c)| *c >= q * total).map(|(bound, _)| round(bound * 1000.0, 3));
    json!({ "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}

pub fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_come_from_bucket_differences() {
        let start = "easel_tick_seconds_bucket{le=\"0.001\"} 10\neasel_tick_seconds_bucket{le=\"0.002\"} 10\neasel_tick_seconds_bucket{le=\"+Inf\"} 10\n";
        let end = "easel_tick_seconds_bucket{le=\"0.001\"} 108\neasel_tick_seconds_bucket{le=\"0.002\"} 110\neasel_tick_seconds_bucket{le=\"+Inf\"} 110\n";
        let p = histogram_percentiles("easel_tick_seconds", start, end);
        assert_eq!(p["p50"], json!(1.0));
        assert_eq!(p["p99"], json!(2.0));
        assert_eq!(p["max"], json!(2.0));
    }

    #[test]
    fn process_ticks_and_fds_are_read_for_a_live_process() {
        let me = std::process::id();
        assert!(process_ticks(me).is_ok());
        assert!(open_fds(me).unwrap() >= 3, "stdin, stdout and stderr at least");
    }
}
