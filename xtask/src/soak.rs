//! `cargo xtask soak --minutes N`: a long run of clients coming and going (`easel-bot
//! --behavior soak`: playing, cut off and resuming, breaking rules) against a server, which is
//! sampled at regular intervals: resident memory, open file descriptors, tick p99 and missed
//! ticks. It fails when memory grows more than 5 % after the warm-up, when the file descriptors
//! do not come back to their count before the run once every client has gone, or when the
//! clients' own checks fail.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::{self, CommonOptions};
use crate::process::{
    self, Reach, histogram_percentiles, http_get, metric, open_fds, read_status_kb, round, start_bots,
};
use crate::step;

/// Memory may grow this much after the warm-up.
const RSS_GROWTH_LIMIT: f64 = 0.05;
/// How long the file descriptors get to come back once the clients are gone.
const SETTLE: Duration = Duration::from_secs(30);

pub struct SoakOptions {
    pub duration: Duration,
    pub clients: usize,
    pub common: CommonOptions,
}

impl SoakOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options =
            Self { duration: Duration::from_secs(30 * 60), clients: 60, common: CommonOptions::default() };
        options.common.record = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if options.common.parse(arg, &mut args)? {
                continue;
            }
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--minutes" => {
                    options.duration = Duration::from_secs_f64(60.0 * value()?.parse::<f64>().context("--minutes")?);
                }
                "--clients" => options.clients = value()?.parse().context("--clients")?,
                other => bail!("unknown soak option {other}"),
            }
        }
        Ok(options)
    }

    /// The first part of the run, during which memory may still grow (caches, rooms' boards):
    /// a sixth of it, at least a minute, at most five.
    fn warmup(&self) -> Duration {
        (self.duration / 6).clamp(Duration::from_secs(60), Duration::from_secs(300)).min(self.duration / 2)
    }

    /// How often the server is sampled: once a minute, more often on a short run.
    fn interval(&self) -> Duration {
        (self.duration / 4).min(Duration::from_secs(60))
    }
}

/// One sample of the server.
struct Sample {
    at: Duration,
    rss_kb: u64,
    fds: usize,
    metrics: String,
}

impl Sample {
    fn take(pid: u32, reach: &Reach, started: Instant) -> Result<Self> {
        Ok(Self {
            at: started.elapsed(),
            rss_kb: read_status_kb(pid, "VmRSS").context("reading the server's VmRSS")?,
            fds: open_fds(pid)?,
            metrics: http_get(reach, "/metrics")?,
        })
    }
}

pub fn run(root: &std::path::Path, options: &SoakOptions) -> Result<()> {
    let binaries = bench::build(root, &options.common)?;
    let (mut server, reach) = process::start_server(&binaries.server, &["--log-level".to_owned(), "warn".to_owned()])?;
    let pid = server.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let baseline = Sample::take(pid, &reach, started)?;
    step(&format!(
        "soak: {} clients coming and going for {:.1} min (warm-up {:.1} min), sampled every {} s",
        options.clients,
        options.duration.as_secs_f64() / 60.0,
        options.warmup().as_secs_f64() / 60.0,
        options.interval().as_secs()
    ));
    let args: Vec<String> = [
        "--behavior".to_owned(),
        "soak".to_owned(),
        "--json".to_owned(),
        "--server".to_owned(),
        reach.base.clone(),
        "--count".to_owned(),
        options.clients.to_string(),
        "--duration".to_owned(),
        format!("{}ms", options.duration.as_millis()),
    ]
    .to_vec();
    let (mut bots, lines) = start_bots(&binaries.bots, &args)?;
    let mut samples = vec![baseline];
    let budget = options.duration + Duration::from_secs(120);
    let summary: Value = loop {
        match lines.recv_timeout(options.interval()) {
            Ok(line) if line.starts_with('{') => break serde_json::from_str(&line)?,
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let sample = Sample::take(pid, &reach, started)?;
                print_row(samples.last().context("a first sample")?, &sample);
                samples.push(sample);
                if started.elapsed() > budget {
                    bail!("watchdog: the soak exceeded its {budget:?} budget");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("the bots printed no summary"),
        }
    };
    let _ = bots.0.wait();
    let end = Sample::take(pid, &reach, started)?;
    print_row(samples.last().context("a first sample")?, &end);
    samples.push(end);

    // Every client is gone: the sockets must be too.
    let settled_by = Instant::now() + SETTLE;
    let mut fds_after = open_fds(pid)?;
    while fds_after > samples[0].fds && Instant::now() < settled_by {
        std::thread::sleep(Duration::from_millis(500));
        fds_after = open_fds(pid)?;
    }
    let server_alive = matches!(server.0.try_wait(), Ok(None));
    process::stop_gracefully(&mut server.0);

    let warmup = options.warmup();
    let at_warmup = samples.iter().rfind(|s| s.at <= warmup).map_or(samples[0].rss_kb, |s| s.rss_kb);
    let later_peak = samples.iter().filter(|s| s.at > warmup).map(|s| s.rss_kb).max();
    let growth = later_peak.map(|peak| peak as f64 / at_warmup as f64 - 1.0);
    let mut reasons = Vec::new();
    if !summary["ok"].as_bool().unwrap_or(false) {
        reasons.push(format!("the clients' checks: {}", summary["reason"].as_str().unwrap_or("failed")));
    }
    if let Some(growth) = growth.filter(|g| *g > RSS_GROWTH_LIMIT) {
        reasons.push(format!("memory grew {:.1} % after the warm-up", growth * 100.0));
    }
    if fds_after > samples[0].fds {
        reasons.push(format!("{} file descriptors open after the run, {} before", fds_after, samples[0].fds));
    }
    if !server_alive {
        reasons.push("the server died".to_owned());
    }
    let first = &samples[0];
    let last = &samples[samples.len() - 1];
    let result = json!({
        "workload": "soak",
        "ok": reasons.is_empty(),
        "reason": if reasons.is_empty() { Value::Null } else { Value::from(reasons.join("; ")) },
        "minutes": round(options.duration.as_secs_f64() / 60.0, 2),
        "clients": options.clients,
        "rss_mb": { "start": mb(first.rss_kb), "after_warmup": mb(at_warmup),
                    "peak_after_warmup": later_peak.map(mb), "end": mb(last.rss_kb) },
        "rss_growth_after_warmup_percent": growth.map(|g| round(g * 100.0, 2)),
        "fds": { "before": first.fds, "peak": samples.iter().map(|s| s.fds).max(), "after": fds_after },
        "tick_ms": histogram_percentiles("easel_tick_seconds", &first.metrics, &last.metrics),
        "missed_ticks": metric(&last.metrics, "easel_ticks_missed_total") - metric(&first.metrics, "easel_ticks_missed_total"),
        "connections_total": metric(&last.metrics, "easel_connections_total"),
        "closed_for_cause": metric(&last.metrics, "easel_closed_for_cause_total"),
        "clients_summary": summary,
    });
    println!("{result}");
    if !reasons.is_empty() {
        bail!("the soak failed: {}", reasons.join("; "));
    }
    println!("soak passed");
    Ok(())
}

fn mb(kb: u64) -> f64 {
    round(kb as f64 / 1024.0, 1)
}

/// One line per sample: memory, descriptors and the ticks since the previous sample.
fn print_row(previous: &Sample, sample: &Sample) {
    let ticks = histogram_percentiles("easel_tick_seconds", &previous.metrics, &sample.metrics);
    let missed =
        metric(&sample.metrics, "easel_ticks_missed_total") - metric(&previous.metrics, "easel_ticks_missed_total");
    println!(
        "  {:>6.1} min   RSS {:>6.1} MB   fds {:>4}   connections {:>4}   tick p99 {:>6} ms   missed ticks {}",
        sample.at.as_secs_f64() / 60.0,
        mb(sample.rss_kb),
        sample.fds,
        metric(&sample.metrics, "easel_connections"),
        ticks["p99"].as_f64().map_or("-".to_owned(), |v| format!("{v:.2}")),
        missed,
    );
}
