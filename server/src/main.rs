//! The `easel` binary: parses the command line, sets up logging and the runtime, and runs the
//! server until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::{Parser, Subcommand};
use easel::ServeArgs;

#[derive(Parser)]
#[command(name = "easel", version, about = "Easel: a multiplayer browser game server with a shared whiteboard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the game server (HTTP, WebSocket and the browser client on one port).
    Serve(ServeArgs),
    /// Run headless bots against a server (load generation), then print what they measured.
    Bot(BotArgs),
}

#[derive(clap::Args)]
struct BotArgs {
    /// WebSocket address of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Room the bots join.
    #[arg(long, default_value = "arena")]
    room: String,
    /// Number of bots (all in this process, on one runtime).
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// How long to measure, after the warm-up (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = easel::config::parse_duration)]
    duration: std::time::Duration,
    /// Time between all bots joining and the start of measuring.
    #[arg(long, default_value = "0s", value_parser = easel::config::parse_duration)]
    warmup: std::time::Duration,
    /// Time after measuring before the bots disconnect.
    #[arg(long, default_value = "1s", value_parser = easel::config::parse_duration)]
    grace: std::time::Duration,
    /// How long all bots may take to join.
    #[arg(long, default_value = "60s", value_parser = easel::config::parse_duration)]
    join_timeout: std::time::Duration,
    /// What the bots do: `arena` moves as the arena workload says, `draw` draws on the room's
    /// board (a stroke about twice a second each), `mixed` does both; `whiteboard` runs the
    /// whiteboard workload (--writers writers and as many readers on room `board`; --count,
    /// --room and --duration are ignored).
    #[arg(long, default_value = "arena")]
    behavior: String,
    /// Move each bot's input schedule by the server's input-timing reports, as the browser
    /// client does (the arena workload itself keeps a fixed schedule).
    #[arg(long)]
    follow_input_timing: bool,
    /// Writers of the whiteboard workload.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Strokes on the whiteboard workload's final board (10,000 is the workload; fewer only for
    /// a quick smoke run, at least 100).
    #[arg(long, default_value_t = easel_client::whiteboard_load::WORKLOAD_STROKES)]
    strokes: usize,
    /// Also print the summary as one JSON line (last line of output).
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bot(args) => bot(args),
    }
}

fn bot(args: BotArgs) -> anyhow::Result<()> {
    use easel_client::bot::{self, Behavior, BotConfig};
    let behavior = match args.behavior.as_str() {
        "arena" => Behavior::Arena,
        "draw" => Behavior::Draw,
        "mixed" => Behavior::Mixed,
        "whiteboard" => return whiteboard_bots(args),
        other => anyhow::bail!("unknown --behavior {other:?}: use arena, draw, mixed or whiteboard"),
    };
    let config = BotConfig {
        url: args.url,
        room: args.room,
        count: args.count,
        behavior,
        follow_input_timing: args.follow_input_timing,
        warmup: args.warmup,
        window: args.duration,
        grace: args.grace,
        join_timeout: args.join_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    // A watchdog: whatever happens, the run ends.
    let budget =
        config.join_timeout + config.warmup + config.window + config.grace + std::time::Duration::from_secs(15);
    let summary = runtime.block_on(async { tokio::time::timeout(budget, bot::run(config, print_milestone)).await });
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
    finish(&summary, summary.ok, summary.reason.as_deref(), args.json)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let level: tracing::Level = config.log_level.parse().context("log level")?;
    tracing_subscriber::fmt().with_max_level(level).with_target(false).init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        let shutdown = shutdown_signal()?;
        println!("Easel listening on http://{address}");
        if let Some(dir) = &config.assets_dir {
            tracing::info!(assets = %dir.display(), tick_rate = config.tick_rate, "serving");
        }
        easel::run(config, listener, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn whiteboard_bots(args: BotArgs) -> anyhow::Result<()> {
    use easel_client::whiteboard_load::{self, WhiteboardConfig};
    anyhow::ensure!(args.strokes >= 100, "--strokes must be at least 100 (the offline case walks 100 strokes)");
    let config = WhiteboardConfig {
        url: args.url,
        writers: args.writers,
        strokes: args.strokes,
        phase_timeout: args.join_timeout.max(args.duration),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let summary = runtime.block_on(whiteboard_load::run(config, print_milestone));
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
    finish(&summary, summary.ok, summary.reason.as_deref(), args.json)
}

/// Prints a run's milestone on its own line, where a benchmark harness watches for it.
fn print_milestone(milestone: easel_client::bot::Milestone) {
    use easel_client::bot::Milestone;
    let name = match milestone {
        Milestone::Joined => "joined",
        Milestone::WindowStart => "window-start",
        Milestone::WindowEnd => "window-end",
    };
    println!("easel-bot: {name}");
}

/// Ends a bot run: says why it failed, prints the JSON summary if asked (as the last line), and
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

/// Registers for Ctrl-C and SIGTERM at once (so a signal that arrives right after start-up is
/// still graceful) and returns a future that completes on either.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
