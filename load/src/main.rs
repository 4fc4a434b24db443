//! `easel-bot`: runs a load workload against a server, prints what the bots measured (and, with
//! `--json`, one JSON line), and exits non-zero when the run failed its own checks.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use easel_client::headless::{Transport, TransportChoice, Trust};
use easel_load::arena::{self, Behavior, BotConfig};
use easel_load::cluster::{self, ClusterConfig};
use easel_load::idle::{self, IdleConfig};
use easel_load::measure::Milestone;
use easel_load::soak::{self, SoakConfig};
use easel_load::whiteboard::{self, WORKLOAD_STROKES, WhiteboardConfig};

#[derive(Parser)]
#[command(name = "easel-bot", version, about = "Headless bots for Easel: load generation and the benchmark workloads")]
struct Cli {
    /// The server: where its pages are (`http://host:port`, or `https://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Over HTTPS, trust only the certificate in this PEM file (e.g. `easel cert dev`'s)
    /// instead of the system's authorities.
    #[arg(long, value_name = "FILE")]
    trust_cert: Option<std::path::PathBuf>,
    /// How the bots connect: `wt` (WebTransport), `ws` (WebSocket), or `auto`, as a page does
    /// (WebTransport when the server offers it). The soak uses both in turn.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
    /// Room the bots join.
    #[arg(long, default_value = "arena")]
    room: String,
    /// Number of bots (all in this process, on one runtime).
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// How long to measure, after the warm-up (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time between all bots joining and the start of measuring.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Time after measuring before the bots disconnect.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// How long all bots may take to join.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    join_timeout: Duration,
    /// What the bots do.
    #[arg(long, value_enum, default_value_t = Workload::Arena)]
    behavior: Workload,
    /// Move each bot's input schedule by the server's input-timing reports, as the browser client
    /// does (the arena workload itself keeps a fixed schedule).
    #[arg(long)]
    follow_input_timing: bool,
    /// Writers of the whiteboard workload.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Strokes on the whiteboard workload's final board (10,000 is the workload; fewer only for
    /// a quick smoke run, at least 100).
    #[arg(long, default_value_t = WORKLOAD_STROKES)]
    strokes: usize,
    /// Also print the summary as one JSON line (last line of output).
    #[arg(long)]
    json: bool,
    /// The cluster workload's server binary: it starts three nodes of it (and a PostgreSQL).
    #[arg(long, value_name = "PATH")]
    easel: Option<std::path::PathBuf>,
    /// Times the cluster workload kills a room's node.
    #[arg(long, default_value_t = 1)]
    failovers: usize,
    /// Clients per room of the idle workload.
    #[arg(long, default_value_t = 10)]
    per_room: usize,
    /// The idle workload's clients send a ping this often, as the page does (1s); without it,
    /// nothing after their `Hello`.
    #[arg(long, value_parser = humantime::parse_duration)]
    ping_every: Option<Duration>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Wt,
    Ws,
    Auto,
}

impl From<TransportArg> for TransportChoice {
    fn from(transport: TransportArg) -> Self {
        match transport {
            TransportArg::Wt => TransportChoice::WebTransport,
            TransportArg::Ws => TransportChoice::WebSocket,
            TransportArg::Auto => TransportChoice::AsThePageWould,
        }
    }
}

/// What the bots do.
#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    /// Move as the arena workload says.
    Arena,
    /// Draw on the room's board: a 32-point stroke about twice a second each.
    Draw,
    /// Both: move as the arena workload says and draw.
    Mixed,
    /// The whiteboard workload: --writers writers and as many readers on room `board`
    /// (--count, --room and --duration are ignored).
    Whiteboard,
    /// Clients coming and going for --duration, --count at a time in a few rooms: playing,
    /// cut off and resuming, breaking rules (`cargo xtask soak` runs it).
    Soak,
    /// Three nodes of --easel on a private PostgreSQL, one bot in each of --count rooms joining
    /// through a random node; the idle cluster measured for --duration; --failovers kills
    /// (`cargo xtask bench cluster` runs it; --server is ignored).
    Cluster,
    /// --count connections in rooms of --per-room that join and then say nothing; the server is
    /// measured over --duration after --warmup (`cargo xtask bench idle` runs it).
    Idle,
}

/// The certificates the bots trust over HTTPS.
fn trust(cli: &Cli) -> anyhow::Result<Trust> {
    match &cli.trust_cert {
        Some(path) => Ok(Trust::only_from_pem_file(path)?),
        None => Ok(Trust::System),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let behavior = match cli.behavior {
        Workload::Arena => Behavior::Arena,
        Workload::Draw => Behavior::Draw,
        Workload::Mixed => Behavior::Mixed,
        Workload::Whiteboard => return whiteboard_bots(cli),
        Workload::Soak => return soak_bots(cli),
        Workload::Cluster => return cluster_bots(cli),
        Workload::Idle => return idle_bots(cli),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let transport = runtime.block_on(Transport::choose(&cli.server, cli.transport.into(), &trust(&cli)?))?;
    println!("easel-bot: transport {}", transport.name());
    let config = BotConfig {
        transport,
        room: cli.room,
        count: cli.count,
        behavior,
        follow_input_timing: cli.follow_input_timing,
        warmup: cli.warmup,
        window: cli.duration,
        grace: cli.grace,
        join_timeout: cli.join_timeout,
    };
    // A watchdog: whatever happens, the run ends.
    let budget = config.join_timeout + config.warmup + config.window + config.grace + Duration::from_secs(15);
    let summary = runtime.block_on(async { tokio::time::timeout(budget, arena::run(config, print_milestone)).await });
    let summary = summary.map_err(|_| anyhow::anyhow!("the bot run exceeded its {budget:?} budget"))??;
    let latency = &summary.latency_ms;
    println!(
        "bots {}/{} connected · window {:.1} s\n  in:  {} messages, {} bytes ({:.0} B/s per bot, {:.1} snapshots/s per bot, min {:.1})\n  out: {} messages, {} bytes\n  input→state latency ms: p50 {:.1} · p90 {:.1} · p99 {:.1} · max {:.1} ({} samples)\n  strokes: {} sent, {} stored",
        summary.connected,
        summary.count,
        summary.window_s,
        summary.messages_in,
        summary.bytes_in,
        summary.rx_payload_bytes_per_client_s,
        summary.snapshots_per_s_per_client.mean,
        summary.snapshots_per_s_per_client.min,
        summary.messages_out,
        summary.bytes_out,
        latency.p50,
        latency.p90,
        latency.p99,
        latency.max,
        latency.samples,
        summary.board_ops_sent,
        summary.board_ops_acked,
    );
    finish(&summary, summary.ok, summary.reason.as_deref(), cli.json)
}

fn whiteboard_bots(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.strokes >= 100, "--strokes must be at least 100 (the offline case walks 100 strokes)");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let transport = runtime.block_on(Transport::choose(&cli.server, cli.transport.into(), &trust(&cli)?))?;
    println!("easel-bot: transport {}", transport.name());
    let config = WhiteboardConfig {
        transport,
        writers: cli.writers,
        strokes: cli.strokes,
        phase_timeout: cli.join_timeout.max(cli.duration),
    };
    let summary = runtime.block_on(whiteboard::run(config, print_milestone));
    println!(
        "whiteboard W={} · {} strokes · {} ops in {:.1} s\n  convergence {:.1} ms · add→all p50 {:.1} / p99 {:.1} / max {:.1} ms\n  late joiner {:.1} ms · stored {} bytes, loads in {:.1} ms · offline merge {:.1} ms ({} strokes)",
        summary.writers,
        summary.strokes,
        summary.ops,
        summary.writing_s,
        summary.convergence_ms,
        summary.latency_add_all_ms.p50,
        summary.latency_add_all_ms.p99,
        summary.latency_add_all_ms.max,
        summary.late_join.full_board_ms,
        summary.stored_board_bytes,
        summary.load_ms,
        summary.offline.converge_ms,
        summary.offline.strokes,
    );
    finish(&summary, summary.ok, summary.reason.as_deref(), cli.json)
}

fn soak_bots(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let websocket = runtime.block_on(Transport::choose(&cli.server, TransportChoice::WebSocket, &trust(&cli)?))?;
    // The soak runs both transports in turn where the server has both.
    let webtransport =
        runtime.block_on(Transport::choose(&cli.server, TransportChoice::WebTransport, &trust(&cli)?)).ok();
    let config = SoakConfig { websocket, webtransport, clients: cli.count, duration: cli.duration };
    let summary = runtime.block_on(soak::run(config, print_milestone));
    println!(
        "soak: {} joins ({} fell back to the WebSocket), {} closes, {} resumes ({} lost), {} rule breakers closed ({} wrongly), {} chats, {} strokes, {} erased, {} errors",
        summary.joins,
        summary.webtransport_fallbacks,
        summary.closes,
        summary.resumes,
        summary.resumes_lost,
        summary.rule_breakers_closed,
        summary.rule_breakers_wrongly_closed,
        summary.chats,
        summary.strokes,
        summary.erases,
        summary.errors,
    );
    finish(&summary, summary.ok, summary.reason.as_deref(), cli.json)
}

fn idle_bots(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let transport = runtime.block_on(Transport::choose(&cli.server, cli.transport.into(), &trust(&cli)?))?;
    println!("easel-bot: transport {}", transport.name());
    let config = IdleConfig {
        transport,
        clients: cli.count,
        per_room: cli.per_room,
        ping_every: cli.ping_every,
        warmup: cli.warmup,
        window: cli.duration,
    };
    let summary = runtime.block_on(idle::run(config, print_milestone));
    println!(
        "idle: {}/{} joined in {} rooms in {:.1} s; {:.1} B/s per client while idle",
        summary.joined, summary.clients, summary.rooms, summary.join_s, summary.bytes_per_client_s
    );
    let ok = summary.ok;
    let reason = summary.reason.clone();
    finish(&summary, ok, reason.as_deref(), cli.json)
}

fn cluster_bots(cli: Cli) -> anyhow::Result<()> {
    let easel = cli.easel.clone().context("the cluster workload needs --easel PATH (the server binary)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let config = ClusterConfig { easel, rooms: cli.count, window: cli.duration, failovers: cli.failovers };
    let report = runtime.block_on(cluster::run(&config));
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            println!("  NOT OK: {e:#}");
            std::process::exit(1);
        }
    };
    println!(
        "cluster: {} rooms on {} nodes; join p50 {:.1} ms, p99 {:.1} ms ({:.0} % redirected); idle: database {:.3} cores, nodes {:.3} cores; failover ({} players) p50 {:.0} ms, max {:.0} ms",
        report.rooms,
        report.nodes,
        report.join_ms.p50,
        report.join_ms.p99,
        report.redirected * 100.0,
        report.database_cores,
        report.nodes_cores,
        report.failed_over,
        report.failover_ms.p50,
        report.failover_ms.max,
    );
    finish(&report, true, None, cli.json)
}

/// Prints a run's milestone on its own line, where a benchmark harness watches for it.
fn print_milestone(milestone: Milestone) {
    println!("{}", milestone.line());
}

/// Ends a run: says why it failed, prints the JSON summary if asked (as the last line), and
/// exits non-zero when the run failed its own checks.
fn finish(summary: &impl serde::Serialize, ok: bool, reason: Option<&str>, json: bool) -> anyhow::Result<()> {
    if let Some(reason) = reason {
        println!("  NOT OK: {reason}");
    }
    if json {
        println!("{}", serde_json::to_string(summary).context("encoding the summary")?);
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
