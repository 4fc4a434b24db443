//! `cargo xtask bench arena`: the arena workload of docs/bench/WORKLOADS.md, measured from
//! outside the server. Starts a server, runs the bots (`easel-bot`) in a separate process at
//! `nice 10`, samples the server's CPU (`/proc/PID/stat`), memory (`VmHWM`) and tick histogram
//! (`/metrics`) at the window's edges, then prints one JSON line and a table, and appends the
//! line to `bench/results/arena.jsonl`. Everything it starts it stops, by PID; a watchdog bounds each run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::process::{
    self, Owned, Reach, histogram_percentiles, http_get, machine_ticks, metric, process_ticks, read_status_kb, round,
    start_bots, stop_gracefully,
};
use crate::{Profile, cargo, step, target_dir};

/// The options of one `bench arena` invocation.
pub struct ArenaOptions {
    pub counts: Vec<usize>,
    pub warmup: Duration,
    pub window: Duration,
    pub common: CommonOptions,
    pub visibility: Visibility,
    /// Bots follow the server's input-timing reports (`--input-timing`): a configuration of its
    /// own, since the workload's schedule is fixed.
    pub input_timing: bool,
    /// The share of packets (%) the loopback drops (`--loss`): the run happens in a network
    /// namespace of its own (`lossy`).
    pub loss_percent: Option<f64>,
}

/// The transport the bots use (`--transport ws|wss|quic`): the workload's baseline is the
/// WebSocket; `wss` is the WebSocket over TLS, the server presenting `easel cert dev`'s
/// certificate and the bots trusting it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum BenchTransport {
    #[default]
    WebSocket,
    SecureWebSocket,
    WebTransport,
}

impl BenchTransport {
    fn parse(value: &str) -> Result<Self> {
        match value {
            "ws" | "websocket" => Ok(BenchTransport::WebSocket),
            "wss" => Ok(BenchTransport::SecureWebSocket),
            "wt" | "quic" | "webtransport" => Ok(BenchTransport::WebTransport),
            other => bail!("--transport is ws, wss or quic, not {other:?}"),
        }
    }

    /// `easel-bot`'s `--transport`.
    fn arg(self) -> &'static str {
        match self {
            BenchTransport::WebSocket | BenchTransport::SecureWebSocket => "ws",
            BenchTransport::WebTransport => "wt",
        }
    }

    /// Its name in results.
    fn name(self) -> &'static str {
        match self {
            BenchTransport::WebSocket => "websocket",
            BenchTransport::SecureWebSocket => "websocket-tls",
            BenchTransport::WebTransport => "webtransport",
        }
    }
}

/// What the server sends each client: the workload's baseline (every player, no budget), or the
/// server's interest management with its default view distance and byte budget.
#[derive(Clone, Copy, PartialEq)]
pub enum Visibility {
    Full,
    Interest,
}

impl Visibility {
    /// The view distance and snapshot budget the server runs with.
    fn settings(self) -> (u32, u32) {
        match self {
            Visibility::Full => (0, 0),
            Visibility::Interest => (1000, 65_536),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Visibility::Full => "full-visibility",
            Visibility::Interest => "interest-management",
        }
    }
}

impl ArenaOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            counts: vec![50, 200, 500, 1000],
            warmup: Duration::from_secs(5),
            window: Duration::from_secs(30),
            common: CommonOptions::default(),
            visibility: Visibility::Full,
            input_timing: false,
            loss_percent: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if options.common.parse(arg, &mut args)? {
                continue;
            }
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--n" => {
                    options.counts = value()?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<_, _>>()
                        .context("--n")?
                }
                "--warmup" => options.warmup = Duration::from_secs_f64(value()?.parse().context("--warmup seconds")?),
                "--window" => options.window = Duration::from_secs_f64(value()?.parse().context("--window seconds")?),
                "--visibility" => {
                    options.visibility = match value()?.as_str() {
                        "full" => Visibility::Full,
                        "interest" => Visibility::Interest,
                        other => bail!("--visibility is full or interest, not {other:?}"),
                    }
                }
                "--input-timing" => options.input_timing = true,
                "--loss" => options.loss_percent = Some(value()?.parse().context("--loss percent")?),
                other => bail!("unknown bench option {other}"),
            }
        }
        Ok(options)
    }

    /// The configuration's name in results: the visibility, input timing when the bots follow
    /// it, and the server's worker count when it is not the default.
    fn config_name(&self) -> String {
        let mut name = self.visibility.name().to_owned();
        if self.input_timing {
            name.push_str("+input-timing");
        }
        if let Some(workers) = self.common.server_workers {
            name.push_str(&format!("+workers={workers}"));
        }
        if self.common.transport == BenchTransport::WebTransport {
            name.push_str("+webtransport");
        }
        if let Some(loss) = self.loss_percent {
            name.push_str(&format!("+loss={loss}%"));
        }
        name
    }
}

/// The flags every benchmark takes: `--dev` (debug build), `--no-record`, `--server-workers N`
/// (the server's `--workers`; a configuration of its own in the results) and `--server PATH`
/// (another build of the server, for before/after runs; never recorded).
pub struct CommonOptions {
    pub profile: Profile,
    pub transport: BenchTransport,
    /// Append results to `bench/results/*.jsonl` (off for smoke runs).
    pub record: bool,
    pub server_workers: Option<usize>,
    /// A server binary to measure instead of this checkout's.
    pub server_binary: Option<PathBuf>,
}

impl Default for CommonOptions {
    fn default() -> Self {
        Self {
            profile: Profile::Release,
            transport: BenchTransport::WebSocket,
            record: true,
            server_workers: None,
            server_binary: None,
        }
    }
}

impl CommonOptions {
    /// Takes `arg` (and its value from `rest`) if it is a common flag.
    pub fn parse<'a>(&mut self, arg: &str, rest: &mut impl Iterator<Item = &'a String>) -> Result<bool> {
        match arg {
            "--dev" => self.profile = Profile::Dev,
            "--no-record" => self.record = false,
            "--transport" => {
                self.transport = BenchTransport::parse(rest.next().context("--transport needs a value")?)?;
            }
            "--server-workers" => {
                let value = rest.next().context("--server-workers needs a value")?;
                self.server_workers = Some(value.parse().context("--server-workers")?);
            }
            "--server" => {
                let path = PathBuf::from(rest.next().context("--server needs a path")?);
                if !path.is_file() {
                    bail!("--server {}: no such file", path.display());
                }
                self.server_binary = Some(path);
                // Its figures belong to another build, not to this checkout's commit.
                self.record = false;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

pub fn arena(root: &Path, options: &ArenaOptions) -> Result<()> {
    let binaries = build(root, &options.common)?;
    let context = RunContext::collect(root, &options.common);
    let results = options.common.record.then(|| root.join("bench").join("results").join("arena.jsonl"));
    let rows = run_series(&options.counts, results.as_deref(), |n| {
        step(&format!("arena, N = {n} (warm-up {:?}, window {:?})", options.warmup, options.window));
        run_arena(&binaries, n, options, &context)
            .unwrap_or_else(|e| failed(n, &context, &e.to_string(), &options.config_name()))
    })?;
    print_table(&rows);
    ensure_all_ok(&rows)
}

/// Runs one workload at each size, printing each JSON line as it comes and appending it to
/// `results` (when recording).
fn run_series(sizes: &[usize], results: Option<&Path>, mut run: impl FnMut(usize) -> Value) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &size in sizes {
        let result = run(size);
        println!("{result}");
        if let Some(path) = results {
            append(path, &result)?;
        }
        rows.push(result);
    }
    Ok(rows)
}

fn ensure_all_ok(rows: &[Value]) -> Result<()> {
    if rows.iter().all(|row| row["ok"].as_bool().unwrap_or(false)) {
        Ok(())
    } else {
        bail!("at least one run failed its checks (see \"reason\")")
    }
}

/// The two programs of a benchmark run.
pub struct Binaries {
    pub server: PathBuf,
    pub bots: PathBuf,
}

/// Builds the bots, and the server unless another build of it was given.
pub fn build(root: &Path, common: &CommonOptions) -> Result<Binaries> {
    let (flag, dir) = match common.profile {
        Profile::Release => (Some("--release"), "release"),
        Profile::Dev => (None, "debug"),
    };
    if common.profile == Profile::Release && common.server_binary.is_none() {
        // A release server embeds the client and will not build without it.
        crate::dist::dist(root, Profile::Release)?;
    }
    step(&format!("building the server and the bots ({dir})"));
    let mut command = cargo();
    command.arg("build");
    if common.server_binary.is_none() {
        command.args(["--package", "easel-server", "--bin", "easel"]);
    }
    command.args(["--package", "easel-load", "--bin", "easel-bot", "--locked"]).args(flag);
    if !command.status()?.success() {
        bail!("building the server and the bots failed");
    }
    let dir = target_dir(root).join(dir);
    let server = common.server_binary.clone().unwrap_or_else(|| dir.join("easel"));
    Ok(Binaries { server, bots: dir.join("easel-bot") })
}

/// Facts recorded beside every result.
pub struct RunContext {
    commit: String,
    date: String,
    machine: String,
    clock_ticks: f64,
}

impl RunContext {
    fn collect(root: &Path, common: &CommonOptions) -> Self {
        let output = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|m| m.trim().to_owned()))
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let commit = match &common.server_binary {
            Some(path) => format!("server {}", path.display()),
            None => output("git", &["rev-parse", "--short", "HEAD"]),
        };
        Self {
            commit,
            date: output("date", &["-u", "+%Y-%m-%d"]),
            machine: format!("{cores} cores, {cpu}"),
            clock_ticks: output("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0),
        }
    }
}

/// Starts a server for a workload: its rules, visibility, worker count and transport (over
/// TLS, with a certificate `easel cert dev` writes).
fn start_server(binary: &Path, rules: &str, visibility: Visibility, common: &CommonOptions) -> Result<(Owned, Reach)> {
    let (view_distance, budget) = visibility.settings();
    let mut args: Vec<String> = ["--rules", rules, "--log-level", "warn", "--view-distance"].map(String::from).to_vec();
    args.extend([view_distance.to_string(), "--snapshot-budget".to_owned(), budget.to_string()]);
    args.extend(common.server_workers.iter().flat_map(|n| ["--workers".to_owned(), n.to_string()]));
    if common.transport == BenchTransport::SecureWebSocket {
        let dir = std::env::temp_dir().join(format!("easel-bench-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let made = Command::new(binary).args(["cert", "dev", "--out"]).arg(&dir).output()?;
        if !made.status.success() {
            bail!("`easel cert dev` failed: {}", String::from_utf8_lossy(&made.stderr));
        }
        args.extend(["--tls-cert".to_owned(), dir.join("easel-dev-cert.pem").display().to_string()]);
        args.extend(["--tls-key".to_owned(), dir.join("easel-dev-key.pem").display().to_string()]);
    }
    process::start_server(binary, &args)
}

/// What we read at one edge of the window.
struct Sample {
    at: Instant,
    server_ticks: u64,
    bots_ticks: u64,
    machine_busy: u64,
    machine_total: u64,
    /// Jiffies the hypervisor gave this VM's CPUs to someone else, so runs on a stretch when it
    /// took some can be told apart.
    machine_steal: u64,
    metrics: String,
    /// The server's resident memory.
    server_rss_kb: u64,
}

/// One bot run against one server, sampled at the window's edges.
struct Measured {
    start: Sample,
    end: Sample,
    /// The whiteboard's offline merge: from the writers' reconnect until every client holds
    /// the merged board and has checked it.
    offline: Option<(Sample, Sample)>,
    summary: Value,
    server_alive: bool,
    rss_peak_kb: u64,
}

/// Runs the bots with `args` against `server`, reached as `reach` says (bounded by `budget`),
/// then stops the server by
/// PID. The inner `Err` is the bots' own reason when they never reached the window.
fn measure(
    binaries: &Binaries,
    args: &[String],
    budget: Duration,
    mut server: Owned,
    reach: &Reach,
) -> Result<Result<Measured, String>> {
    let server_pid = server.0.id();
    let args: Vec<String> = reach.bot_args().into_iter().chain(args.iter().cloned()).collect();
    let (mut bots, lines) = start_bots(&binaries.bots, &args)?;
    let (edges, summary) = follow_bots(&lines, budget, server_pid, bots.0.id(), reach)?;
    let _ = bots.0.wait();
    let server_alive = matches!(server.0.try_wait(), Ok(None));
    let rss_peak_kb = read_status_kb(server_pid, "VmHWM").unwrap_or(0);
    stop_gracefully(&mut server.0);
    let offline = edges.offline_start.zip(edges.offline_end);
    match (edges.start, edges.end) {
        (Some(start), Some(end)) => Ok(Ok(Measured { start, end, offline, summary, server_alive, rss_peak_kb })),
        _ => Ok(Err(summary["reason"].as_str().unwrap_or("the bots never reached the window").to_owned())),
    }
}

/// The samples taken at the bots' milestones.
#[derive(Default)]
struct Edges {
    start: Option<Sample>,
    end: Option<Sample>,
    offline_start: Option<Sample>,
    offline_end: Option<Sample>,
}

/// Reads the bots' output until their JSON summary, sampling the server at the window's edges
/// (and the offline merge's); bounded by `budget`.
fn follow_bots(
    lines: &mpsc::Receiver<String>,
    budget: Duration,
    server_pid: u32,
    bots_pid: u32,
    reach: &Reach,
) -> Result<(Edges, Value)> {
    let deadline = Instant::now() + budget;
    let mut edges = Edges::default();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(remaining) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("watchdog: the run exceeded its {budget:?} budget"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the bots printed no summary"),
        };
        let edge = match line.as_str() {
            "easel-bot: window-start" => &mut edges.start,
            "easel-bot: window-end" => &mut edges.end,
            "easel-bot: offline-start" => &mut edges.offline_start,
            "easel-bot: offline-end" => &mut edges.offline_end,
            json if json.starts_with('{') => return Ok((edges, serde_json::from_str(json)?)),
            _ => continue,
        };
        *edge = Some(sample(server_pid, bots_pid, reach)?);
    }
}

fn run_arena(binaries: &Binaries, n: usize, options: &ArenaOptions, context: &RunContext) -> Result<Value> {
    let (server, reach) = start_server(&binaries.server, "arena-benchmark", options.visibility, &options.common)?;
    let join_budget = Duration::from_secs(60);
    let budget = join_budget + options.warmup + options.window + Duration::from_secs(30);
    let mut args: Vec<String> = [
        "--behavior",
        "arena",
        "--room",
        "arena",
        "--json",
        "--transport",
        options.common.transport.arg(),
        "--count",
        &n.to_string(),
        "--warmup",
        &format!("{}ms", options.warmup.as_millis()),
        "--duration",
        &format!("{}ms", options.window.as_millis()),
        "--join-timeout",
        &format!("{}ms", join_budget.as_millis()),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if options.input_timing {
        args.push("--follow-input-timing".to_owned());
    }
    let run = match measure(binaries, &args, budget, server, &reach)? {
        Ok(run) => run,
        Err(reason) => return Ok(failed(n, context, &reason, &options.config_name())),
    };
    let Measured { start, end, summary, server_alive, rss_peak_kb, .. } = run;
    let window = end.at.duration_since(start.at).as_secs_f64();
    let ticks_to_seconds = |t: u64| t as f64 / context.clock_ticks;
    let server_cores = ticks_to_seconds(end.server_ticks - start.server_ticks) / window;
    let load_cores = ticks_to_seconds(end.bots_ticks - start.bots_ticks) / window;
    let machine_cores = cores_of(&start, &end, |s| s.machine_busy);
    let steal_cores = cores_of(&start, &end, |s| s.machine_steal);
    let ticks = metric(&end.metrics, "easel_ticks_total") - metric(&start.metrics, "easel_ticks_total");
    let missed = metric(&end.metrics, "easel_ticks_missed_total") - metric(&start.metrics, "easel_ticks_missed_total");
    let tick_ms = histogram_percentiles("easel_tick_seconds", &start.metrics, &end.metrics);
    let fanout_ms = histogram_percentiles("easel_snapshot_fanout_seconds", &start.metrics, &end.metrics);

    let mut reasons = Vec::new();
    if !summary["ok"].as_bool().unwrap_or(false) {
        reasons.push(summary["reason"].as_str().unwrap_or("bots reported a failure").to_owned());
    }
    if !server_alive {
        reasons.push("the server died during the run".to_owned());
    }
    if (window - options.window.as_secs_f64()).abs() > options.window.as_secs_f64() * 0.1 + 0.5 {
        reasons.push(format!("window not kept: measured {window:.2} s"));
    }
    Ok(json!({
        "impl": "easel",
        "workload": "arena",
        "config": options.config_name(),
        "input_timing": options.input_timing,
        "transport": options.common.transport.name(),
        "loss_percent": options.loss_percent,
        "server_workers": options.common.server_workers,
        "view_distance": options.visibility.settings().0,
        "snapshot_budget_bytes_per_s": options.visibility.settings().1,
        "n": n,
        "ok": reasons.is_empty(),
        "reason": if reasons.is_empty() { Value::Null } else { Value::from(reasons.join("; ")) },
        "window_s": round(window, 3),
        "server_cpu_cores": round(server_cores, 4),
        "server_cpu_ms_per_client_s": round(server_cores * 1000.0 / n as f64, 4),
        "load_cpu_cores": round(load_cores, 3),
        "machine_cpu_cores": round(machine_cores, 3),
        "machine_steal_cores": round(steal_cores, 3),
        "server_rss_peak_mb": round(rss_peak_kb as f64 / 1024.0, 1),
        "rx_payload_bytes_per_client_s": round(summary["rx_payload_bytes_per_client_s"].as_f64().unwrap_or(0.0), 1),
        "rx_tcp_bytes_per_client_s": round(summary["rx_tcp_bytes_per_client_s"].as_f64().unwrap_or(0.0), 1),
        "latency_ms": summary["latency_ms"],
        "snapshot_gap_ms": summary["snapshot_gap_ms"],
        "freeze_ms": summary["freeze_ms"],
        "snapshots_per_s_per_client": summary["snapshots_per_s_per_client"],
        "tick_ms": tick_ms,
        "fanout_ms": fanout_ms,
        "ticks_per_s": round(ticks / window, 2),
        "missed_ticks": missed,
        "commit": context.commit,
        "date": context.date,
        "machine": context.machine,
    }))
}

fn failed(n: usize, context: &RunContext, reason: &str, config: &str) -> Value {
    json!({
        "impl": "easel", "workload": "arena", "config": config, "n": n, "ok": false, "reason": reason,
        "commit": context.commit, "date": context.date, "machine": context.machine,
    })
}

fn sample(server_pid: u32, bots_pid: u32, reach: &Reach) -> Result<Sample> {
    let (machine_busy, machine_total, machine_steal) = machine_ticks()?;
    Ok(Sample {
        at: Instant::now(),
        server_ticks: process_ticks(server_pid)?,
        // `nice` execs the bot binary, so the PID is the bots' own.
        bots_ticks: process_ticks(bots_pid)?,
        machine_busy,
        machine_total,
        machine_steal,
        metrics: http_get(reach, "/metrics")?,
        server_rss_kb: read_status_kb(server_pid, "VmRSS").unwrap_or(0),
    })
}

/// Cores' worth of one `/proc/stat` counter between two samples.
fn cores_of(start: &Sample, end: &Sample, counter: impl Fn(&Sample) -> u64) -> f64 {
    (counter(end) - counter(start)) as f64 / (end.machine_total - start.machine_total).max(1) as f64
        * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn append(path: &Path, result: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{result}")?;
    Ok(())
}

fn print_table(rows: &[Value]) {
    if let Some(config) = rows.first().and_then(|r| r["config"].as_str()) {
        println!("\n{config}");
    }
    println!(
        "{:>6} {:>4} {:>9} {:>11} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>10} {:>10} {:>7} {:>6}",
        "N",
        "ok",
        "CPU cores",
        "ms/client·s",
        "RSS MB",
        "B/s/client",
        "lat p50",
        "lat p99",
        "lat max",
        "gap p99",
        "gap max",
        "freeze max",
        "snaps min",
        "tick p99ms",
        "fanout p99",
        "missed",
        "steal"
    );
    for row in rows {
        let f = |path: &[&str]| {
            let mut value = row;
            for key in path {
                value = &value[*key];
            }
            value.as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"))
        };
        println!(
            "{:>6} {:>4} {:>9} {:>11} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>10} {:>10} {:>7} {:>6}",
            row["n"].to_string(),
            if row["ok"].as_bool().unwrap_or(false) { "yes" } else { "NO" },
            f(&["server_cpu_cores"]),
            f(&["server_cpu_ms_per_client_s"]),
            f(&["server_rss_peak_mb"]),
            f(&["rx_payload_bytes_per_client_s"]),
            f(&["latency_ms", "p50"]),
            f(&["latency_ms", "p99"]),
            f(&["latency_ms", "max"]),
            f(&["snapshot_gap_ms", "p99"]),
            f(&["snapshot_gap_ms", "max"]),
            f(&["freeze_ms", "max"]),
            f(&["snapshots_per_s_per_client", "min"]),
            f(&["tick_ms", "p99"]),
            f(&["fanout_ms", "p99"]),
            f(&["missed_ticks"]),
            f(&["machine_steal_cores"]),
        );
    }
}

/// The options of one `bench whiteboard` invocation.
pub struct WhiteboardOptions {
    pub writers: Vec<usize>,
    /// Final board size: the workload's 10,000, or fewer for a smoke run (never recorded).
    pub strokes: usize,
    pub common: CommonOptions,
}

impl WhiteboardOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self { writers: vec![4, 16, 64], strokes: 10_000, common: CommonOptions::default() };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if options.common.parse(arg, &mut args)? {
                continue;
            }
            match arg.as_str() {
                "--w" => {
                    let list = args.next().context("--w needs a value")?;
                    options.writers =
                        list.split(',').map(|w| w.trim().parse::<usize>()).collect::<Result<_, _>>().context("--w")?;
                }
                "--strokes" => {
                    options.strokes = args.next().context("--strokes needs a value")?.parse().context("--strokes")?;
                    // Smaller than the workload: a smoke run, whose figures are not comparable.
                    options.common.record = false;
                }
                other => bail!("unknown bench option {other}"),
            }
        }
        Ok(options)
    }
}

/// `cargo xtask bench whiteboard`: the whiteboard workload of docs/bench/WORKLOADS.md per W.
pub fn whiteboard(root: &Path, options: &WhiteboardOptions) -> Result<()> {
    let binaries = build(root, &options.common)?;
    let context = RunContext::collect(root, &options.common);
    let results = options.common.record.then(|| root.join("bench").join("results").join("whiteboard.jsonl"));
    let rows = run_series(&options.writers, results.as_deref(), |w| {
        step(&format!("whiteboard, W = {w} writers + {w} readers"));
        run_whiteboard(&binaries, w, options, &context).unwrap_or_else(|e| {
            json!({ "impl": "easel", "workload": "whiteboard", "w": w, "ok": false, "reason": e.to_string(),
                    "commit": context.commit, "date": context.date, "machine": context.machine })
        })
    })?;
    println!(
        "\n{:>4} {:>4} {:>12} {:>22} {:>14} {:>12} {:>8} {:>10} {:>10} {:>9} {:>11} {:>17} {:>6}",
        "W",
        "ok",
        "converge ms",
        "add→all p50/p99/max ms",
        "MB sent/client",
        "server CPU s",
        "RSS MB",
        "late ms",
        "stored KB",
        "load ms",
        "offline ms",
        "offline CPU ms s/b",
        "steal"
    );
    for row in &rows {
        let f = |v: &Value, scale: f64| v.as_f64().map_or("-".to_owned(), |x| format!("{:.1}", x * scale));
        let latency = &row["latency_add_all_ms"];
        println!(
            "{:>4} {:>4} {:>12} {:>22} {:>14} {:>12} {:>8} {:>10} {:>10} {:>9} {:>11} {:>17} {:>6}",
            row["w"].to_string(),
            if row["ok"].as_bool().unwrap_or(false) { "yes" } else { "NO" },
            f(&row["convergence_ms"], 1.0),
            format!("{}/{}/{}", f(&latency["p50"], 1.0), f(&latency["p99"], 1.0), f(&latency["max"], 1.0)),
            f(&row["server_bytes_sent_per_client"], 1e-6),
            f(&row["server_cpu_s"], 1.0),
            f(&row["server_rss_peak_mb"], 1.0),
            f(&row["late_join"]["full_board_ms"], 1.0),
            f(&row["stored_board_bytes"], 1e-3),
            f(&row["load_ms"], 1.0),
            f(&row["offline"]["converge_ms"], 1.0),
            format!("{}/{}", f(&row["offline"]["server_cpu_ms"], 1.0), f(&row["offline"]["bots_cpu_ms"], 1.0)),
            row["machine_steal_cores"].as_f64().map_or("-".to_owned(), |x| format!("{x:.2}")),
        );
    }
    ensure_all_ok(&rows)
}

fn run_whiteboard(binaries: &Binaries, w: usize, options: &WhiteboardOptions, context: &RunContext) -> Result<Value> {
    let strokes = options.strokes;
    let workers = options.common.server_workers;
    let (server, reach) = start_server(&binaries.server, "game", Visibility::Full, &options.common)?;
    // Each phase may take this long; the run as a whole is bounded by the watchdog below.
    let phase = Duration::from_secs(180);
    let args: Vec<String> = ["--behavior", "whiteboard", "--json", "--transport", options.common.transport.arg()]
        .iter()
        .map(|a| a.to_string())
        .chain(["--writers".to_owned(), w.to_string(), "--join-timeout".to_owned(), format!("{}s", phase.as_secs())])
        .chain(["--strokes".to_owned(), strokes.to_string()])
        .collect();
    let Measured { start, end, offline, summary, server_alive, rss_peak_kb } =
        measure(binaries, &args, phase * 4, server, &reach)?.map_err(anyhow::Error::msg)?;
    let cpu_s = (end.server_ticks - start.server_ticks) as f64 / context.clock_ticks;
    // The merge's CPU, each process's, in ms: the server's is its cost of the merge; the bots'
    // includes their digest checks after it.
    let mut offline_summary = summary["offline"].clone();
    if let (Some((from, to)), Some(fields)) = (&offline, offline_summary.as_object_mut()) {
        let ms = |ticks: u64| round(ticks as f64 / context.clock_ticks * 1000.0, 0);
        fields.insert("server_cpu_ms".to_owned(), ms(to.server_ticks - from.server_ticks).into());
        fields.insert("bots_cpu_ms".to_owned(), ms(to.bots_ticks - from.bots_ticks).into());
        fields.insert("sampled_ms".to_owned(), round(to.at.duration_since(from.at).as_secs_f64() * 1000.0, 1).into());
    }
    let steal_cores = cores_of(&start, &end, |s| s.machine_steal);
    let bytes_sent = metric(&end.metrics, "easel_bytes_out_total") - metric(&start.metrics, "easel_bytes_out_total");
    let mut reasons = Vec::new();
    if !summary["ok"].as_bool().unwrap_or(false) {
        reasons.push(summary["reason"].as_str().unwrap_or("bots reported a failure").to_owned());
    }
    if !server_alive {
        reasons.push("the server died during the run".to_owned());
    }
    Ok(json!({
        "impl": "easel",
        "workload": "whiteboard",
        // Rows without a configuration are the server's defaults (report.rs names them so).
        "config": workers.map(|n| format!("workers={n}")),
        "server_workers": workers,
        "transport": options.common.transport.name(),
        "w": w,
        "ok": reasons.is_empty(),
        "reason": if reasons.is_empty() { Value::Null } else { Value::from(reasons.join("; ")) },
        "strokes": summary["strokes"],
        "ops": summary["ops"],
        "writing_s": summary["writing_s"],
        "convergence_ms": summary["convergence_ms"],
        "latency_add_all_ms": summary["latency_add_all_ms"],
        "server_bytes_sent": bytes_sent,
        "server_bytes_sent_per_client": round(bytes_sent / (2 * w) as f64, 0),
        "server_cpu_s": round(cpu_s, 3),
        "server_rss_peak_mb": round(rss_peak_kb as f64 / 1024.0, 1),
        "machine_steal_cores": round(steal_cores, 3),
        "late_join": summary["late_join"],
        "stored_board_bytes": summary["stored_board_bytes"],
        "load_ms": summary["load_ms"],
        "offline": offline_summary,
        "commit": context.commit,
        "date": context.date,
        "machine": context.machine,
    }))
}

/// `cargo xtask bench cluster [--rooms 1000] [--window 10] [--failovers 3]`.
pub struct ClusterOptions {
    pub rooms: Vec<usize>,
    pub window: Duration,
    pub failovers: usize,
    pub common: CommonOptions,
}

impl ClusterOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options =
            Self { rooms: vec![1000], window: Duration::from_secs(10), failovers: 3, common: CommonOptions::default() };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if options.common.parse(arg, &mut args)? {
                continue;
            }
            match arg.as_str() {
                "--rooms" => {
                    let list = args.next().context("--rooms needs a value")?;
                    options.rooms = list
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<_, _>>()
                        .context("--rooms")?;
                }
                "--window" => {
                    let seconds: u64 = args.next().context("--window needs seconds")?.parse().context("--window")?;
                    options.window = Duration::from_secs(seconds);
                }
                "--failovers" => {
                    options.failovers =
                        args.next().context("--failovers needs a value")?.parse().context("--failovers")?;
                }
                other => bail!("unknown bench option {other}"),
            }
        }
        Ok(options)
    }
}

/// `cargo xtask bench cluster`: three nodes on a private PostgreSQL, run by `easel-bot
/// --behavior cluster` (it starts them); one JSON line and a table row per room count.
pub fn cluster(root: &Path, options: &ClusterOptions) -> Result<()> {
    let binaries = build(root, &options.common)?;
    let context = RunContext::collect(root, &options.common);
    let results = options.common.record.then(|| root.join("bench").join("results").join("cluster.jsonl"));
    let rows = run_series(&options.rooms, results.as_deref(), |rooms| {
        step(&format!(
            "cluster, 3 nodes, {rooms} rooms (window {:?}, {} failovers)",
            options.window, options.failovers
        ));
        run_cluster(&binaries, rooms, options, &context).unwrap_or_else(|e| {
            json!({ "impl": "easel", "workload": "cluster", "rooms": rooms, "ok": false, "reason": e.to_string(),
                    "commit": context.commit, "date": context.date, "machine": context.machine })
        })
    })?;
    println!(
        "\n{:>6} {:>4} {:>20} {:>11} {:>13} {:>11} {:>22}",
        "rooms", "ok", "join p50/p99 ms", "redirected", "database cores", "node cores", "failover p50/max ms"
    );
    for row in &rows {
        let f = |v: &Value, digits: usize| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.digits$}"));
        println!(
            "{:>6} {:>4} {:>20} {:>11} {:>13} {:>11} {:>22}",
            row["rooms"].to_string(),
            if row["ok"].as_bool().unwrap_or(false) { "yes" } else { "NO" },
            format!("{}/{}", f(&row["join_ms"]["p50"], 1), f(&row["join_ms"]["p99"], 1)),
            row["redirected"].as_f64().map_or("-".to_owned(), |x| format!("{:.0} %", x * 100.0)),
            f(&row["database_cores"], 3),
            f(&row["nodes_cores"], 3),
            format!("{}/{}", f(&row["failover_ms"]["p50"], 0), f(&row["failover_ms"]["max"], 0)),
        );
    }
    ensure_all_ok(&rows)
}

fn run_cluster(binaries: &Binaries, rooms: usize, options: &ClusterOptions, context: &RunContext) -> Result<Value> {
    let output = Command::new(&binaries.bots)
        .args(["--behavior", "cluster", "--json", "--easel"])
        .arg(&binaries.server)
        .args(["--count", &rooms.to_string(), "--duration", &format!("{}s", options.window.as_secs())])
        .args(["--failovers", &options.failovers.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running easel-bot")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!("{}", stdout.lines().find_map(|l| l.trim().strip_prefix("NOT OK: ")).unwrap_or("the bots failed"));
    }
    let summary: Value = serde_json::from_str(stdout.lines().last().context("no output")?).context("the JSON line")?;
    Ok(json!({
        "impl": "easel",
        "workload": "cluster",
        "nodes": summary["nodes"],
        "rooms": rooms,
        "ok": true,
        "reason": Value::Null,
        "window_s": options.window.as_secs(),
        "join_ms": summary["join_ms"],
        "redirected": summary["redirected"],
        "database_cores": round(summary["database_cores"].as_f64().unwrap_or(0.0), 4),
        "nodes_cores": round(summary["nodes_cores"].as_f64().unwrap_or(0.0), 3),
        "failover_ms": summary["failover_ms"],
        "failed_over": summary["failed_over"],
        "commit": context.commit,
        "date": context.date,
        "machine": context.machine,
    }))
}

/// `cargo xtask bench idle [--n 5000,15000] [--per-room 10] [--window 10] [--ping-every 1]`.
pub struct IdleOptions {
    pub counts: Vec<usize>,
    pub per_room: usize,
    pub window: Duration,
    /// Each client pings this often, as the page does; `None`: clients send nothing.
    pub ping_every: Option<Duration>,
    pub common: CommonOptions,
}

impl IdleOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            counts: vec![5000, 15000],
            per_room: 10,
            window: Duration::from_secs(10),
            ping_every: None,
            common: CommonOptions::default(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if options.common.parse(arg, &mut args)? {
                continue;
            }
            match arg.as_str() {
                "--n" => {
                    let list = args.next().context("--n needs a value")?;
                    options.counts =
                        list.split(',').map(|n| n.trim().parse::<usize>()).collect::<Result<_, _>>().context("--n")?;
                }
                "--per-room" => {
                    options.per_room =
                        args.next().context("--per-room needs a value")?.parse().context("--per-room")?;
                }
                "--window" => {
                    let seconds: u64 = args.next().context("--window needs seconds")?.parse().context("--window")?;
                    options.window = Duration::from_secs(seconds);
                }
                "--ping-every" => {
                    let seconds: f64 =
                        args.next().context("--ping-every needs seconds")?.parse().context("--ping-every")?;
                    if !(seconds > 0.0 && seconds.is_finite()) {
                        bail!("--ping-every takes a positive number of seconds");
                    }
                    options.ping_every = Some(Duration::from_secs_f64(seconds));
                }
                other => bail!("unknown bench option {other}"),
            }
        }
        Ok(options)
    }
}

/// `cargo xtask bench idle`: connections that join and say nothing; the server's memory per
/// connection (RSS over the same server before any joined) and its CPU while they stand.
pub fn idle(root: &Path, options: &IdleOptions) -> Result<()> {
    let binaries = build(root, &options.common)?;
    let context = RunContext::collect(root, &options.common);
    let results = options.common.record.then(|| root.join("bench").join("results").join("idle.jsonl"));
    let rows = run_series(&options.counts, results.as_deref(), |n| {
        let pings = options.ping_every.map_or("no pings".to_owned(), |every| format!("a ping every {every:?}"));
        step(&format!("idle, {n} connections in rooms of {}, {pings} (window {:?})", options.per_room, options.window));
        run_idle(&binaries, n, options, &context).unwrap_or_else(|e| {
            json!({ "impl": "easel", "workload": "idle", "n": n, "ok": false, "reason": e.to_string(),
                    "commit": context.commit, "date": context.date, "machine": context.machine })
        })
    })?;
    println!(
        "\n{:>7} {:>6} {:>7} {:>4} {:>14} {:>16} {:>13} {:>16}",
        "n", "rooms", "ping s", "ok", "server cores", "RSS KB / conn", "RSS MB", "B/s per client"
    );
    for row in &rows {
        let f = |v: &Value, digits: usize| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.digits$}"));
        println!(
            "{:>7} {:>6} {:>7} {:>4} {:>14} {:>16} {:>13} {:>16}",
            row["n"].to_string(),
            row["rooms"].to_string(),
            f(&row["ping_every_s"], 1),
            if row["ok"].as_bool().unwrap_or(false) { "yes" } else { "NO" },
            f(&row["server_cores"], 3),
            f(&row["rss_kb_per_connection"], 1),
            f(&row["server_rss_mb"], 1),
            f(&row["bytes_per_client_s"], 1),
        );
    }
    ensure_all_ok(&rows)
}

fn run_idle(binaries: &Binaries, n: usize, options: &IdleOptions, context: &RunContext) -> Result<Value> {
    let args: Vec<String> = ["--rules", "game", "--log-level", "warn", "--max-connections"]
        .iter()
        .map(|a| a.to_string())
        .chain([(n + 100).to_string()])
        .chain(options.common.server_workers.iter().flat_map(|w| ["--workers".to_owned(), w.to_string()]))
        .collect();
    let (server, reach) = process::start_server(&binaries.server, &args)?;
    let server_pid = server.0.id();
    // The server before any connection: what each one adds is measured against it.
    std::thread::sleep(Duration::from_millis(500));
    let baseline_kb = read_status_kb(server_pid, "VmRSS").context("the server's memory")?;
    let bot_args: Vec<String> = ["--behavior", "idle", "--json", "--transport", "ws", "--warmup", "3s"]
        .iter()
        .map(|a| a.to_string())
        .chain(["--count".to_owned(), n.to_string(), "--per-room".to_owned(), options.per_room.to_string()])
        .chain(["--duration".to_owned(), format!("{}s", options.window.as_secs())])
        .chain(
            options.ping_every.iter().flat_map(|every| ["--ping-every".to_owned(), format!("{}ms", every.as_millis())]),
        )
        .collect();
    let budget = Duration::from_secs(180) + options.window;
    let Measured { start, end, summary, server_alive, .. } =
        measure(binaries, &bot_args, budget, server, &reach)?.map_err(anyhow::Error::msg)?;
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    let cores = (end.server_ticks - start.server_ticks) as f64 / context.clock_ticks / seconds;
    let rss_kb = end.server_rss_kb;
    let mut reasons = Vec::new();
    if !summary["ok"].as_bool().unwrap_or(false) {
        reasons.push(summary["reason"].as_str().unwrap_or("the bots failed").to_owned());
    }
    if !server_alive {
        reasons.push("the server died during the run".to_owned());
    }
    Ok(json!({
        "impl": "easel",
        "workload": "idle",
        "n": n,
        "rooms": summary["rooms"],
        "per_room": options.per_room,
        "ping_every_s": options.ping_every.map(|every| every.as_secs_f64()),
        "ok": reasons.is_empty(),
        "reason": if reasons.is_empty() { Value::Null } else { Value::from(reasons.join("; ")) },
        "server_cores": round(cores, 4),
        "server_rss_mb": round(rss_kb as f64 / 1024.0, 1),
        "server_rss_baseline_mb": round(baseline_kb as f64 / 1024.0, 1),
        "rss_kb_per_connection": round(rss_kb.saturating_sub(baseline_kb) as f64 / n as f64, 2),
        "bytes_per_client_s": summary["bytes_per_client_s"],
        "join_s": summary["join_s"],
        "window_s": options.window.as_secs(),
        "commit": context.commit,
        "date": context.date,
        "machine": context.machine,
    }))
}
