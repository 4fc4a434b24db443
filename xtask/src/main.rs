//! Build orchestration for Easel: `cargo xtask dist | run | test | lint`.
//!
//! `test` is the one command CI and newcomers run: it installs what a fresh machine lacks (the
//! wasm32 target, Debian's chromium and postgresql, npm's playwright-core), then runs every test
//! layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod apt;
mod autobahn;
mod bench;
mod dist;
mod fuzz;
mod lossy;
mod process;
mod report;
mod soak;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  run [SERVE FLAGS]   build the browser client and start the server (release) on http://127.0.0.1:8080
  dist [--dev]        build the browser client into dist/ (wasm + glue + assets, hashed names,
                      gzip and brotli forms), which the server's build embeds
  test                install what is missing, then run all tests: lint, Rust, browser end-to-end
  lint                rustfmt check and clippy -D warnings (native and wasm32)
  autobahn            Autobahn|Testsuite against the server's WebSocket edge (needs Python 2.7),
                      compared with tests/autobahn/expected.json; then against /ws, summarised
  bench arena [--n 50,200,500,1000] [--visibility full|interest] [--input-timing] [--warmup S] [--window S]
              [--server-workers N] [--server PATH] [--transport ws|wss|quic] [--loss PERCENT] [--dev] [--no-record]
                      the arena workload (docs/bench/WORKLOADS.md): JSON line + table per N
                      (wss: the WebSocket over TLS, with `easel cert dev`'s certificate),
                      appended to bench/results/arena.jsonl; --loss runs it in a network
                      namespace whose loopback drops that share of packets (root, nftables)
  bench whiteboard [--w 4,16,64] [--server-workers N] [--server PATH] [--transport ws|quic] [--dev] [--no-record]
                      the whiteboard workload: JSON line + table per W,
                      appended to bench/results/whiteboard.jsonl
  bench cluster [--rooms 1000] [--window 10] [--failovers 3] [--server PATH] [--dev] [--no-record]
                      three nodes on a private PostgreSQL, one bot per room joining through a
                      random node: join time (redirects included), the idle cluster's database
                      and node CPU, failover time after kill -9 of a room's node; appended to
                      bench/results/cluster.jsonl
  bench idle [--n 5000,15000] [--per-room 10] [--window 10] [--ping-every SECONDS] [--server-workers N] [--server PATH] [--dev] [--no-record]
                      connections that join rooms of --per-room and then say nothing (or only
                      ping, as the page does every second): the server's RSS per connection
                      and its CPU while they stand; appended to bench/results/idle.jsonl
  bench report        SVG plots of the recorded results into docs/bench/
  fuzz [--seconds 60] [--target NAME] [--minimize]
                      coverage-guided fuzzing of every decoder and state machine of untrusted
                      input (nightly + cargo-fuzz); grows fuzz/corpus/, crashers in fuzz/artifacts/
  soak [--minutes 30] [--clients 60] [--server PATH] [--dev]
                      clients coming and going against a server sampled each minute; fails
                      when memory grows over 5 % after the warm-up or descriptors leak";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("run") => run(&root, &args[1..]),
        Some("dist") => {
            dist::dist(&root, if args.iter().any(|a| a == "--dev") { Profile::Dev } else { Profile::Release })
        }
        Some("test") => test(&root),
        Some("lint") => lint(),
        Some("autobahn") => autobahn::run(&root, autobahn::Scope::EdgeAndProduction),
        Some("soak") => soak::run(&root, &soak::SoakOptions::parse(&args[1..])?),
        Some("fuzz") => fuzz::run(&root, &fuzz::FuzzOptions::parse(&args[1..])?),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("arena") => {
                let options = bench::ArenaOptions::parse(&args[2..])?;
                match options.loss_percent {
                    Some(loss) if !lossy::inside() => {
                        // Built here: the namespace has no way out, and needs none.
                        bench::build(&root, &options.common)?;
                        lossy::run_inside(loss, &args)
                    }
                    _ => bench::arena(&root, &options),
                }
            }
            Some("whiteboard") => bench::whiteboard(&root, &bench::WhiteboardOptions::parse(&args[2..])?),
            Some("cluster") => bench::cluster(&root, &bench::ClusterOptions::parse(&args[2..])?),
            Some("idle") => bench::idle(&root, &bench::IdleOptions::parse(&args[2..])?),
            Some("report") => report::render(&root),
            _ => {
                eprintln!("{USAGE}");
                bail!("bench takes `arena`, `whiteboard`, `cluster`, `idle` or `report`")
            }
        },
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown or missing command")
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Dev,
    Release,
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn run(root: &Path, serve_flags: &[String]) -> Result<()> {
    dist::dist(root, Profile::Release)?;
    let mut command = cargo();
    // The server embeds the client just built (its build script reads dist/).
    command.args(["run", "--release", "--package", "easel-server", "--bin", "easel", "--", "serve"]);
    command.args(serve_flags);
    // Ctrl-C reaches the server too (same process group); it shuts down gracefully and we
    // pass its exit status on.
    let status = command.status().context("starting the server")?;
    if !status.success() {
        bail!("server exited with {status}");
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    ensure_chromium()?;
    ensure_postgres()?;
    ensure_playwright(root)?;
    lint()?;
    step("Rust tests (unit, property, integration)");
    let rust = run_counting(cargo().args(["test", "--workspace", "--locked"]))?;
    if !rust.success {
        bail!("Rust tests failed");
    }
    step("the Agones integration against an SDK server stand-in (the agones feature)");
    let agones = run_counting(
        cargo()
            .args(["test", "--package", "easel-tests", "--features", "agones", "--locked"])
            .args(["--test", "agones"]),
    )?;
    if !agones.success {
        bail!("the Agones test failed");
    }
    dist::dist(root, Profile::Release)?;
    step("building the server for the browser tests");
    let status = cargo().args(["build", "--package", "easel-server", "--bin", "easel", "--locked"]).status()?;
    if !status.success() {
        bail!("building the server failed");
    }
    step("browser end-to-end tests (headless chromium)");
    let mut node = Command::new("node");
    node.arg("tests/e2e/e2e.mjs").env("EASEL_BIN", target_dir(root).join("debug").join("easel"));
    let browser = run_counting(&mut node).context("running node (Node 20 is required)")?;
    if !browser.success {
        bail!("browser tests failed");
    }
    if autobahn::available() {
        autobahn::run(root, autobahn::Scope::Edge).context("the WebSocket edge's Autobahn results changed")?;
    } else {
        step("Autobahn|Testsuite skipped: no Python 2.7 on this machine (see `cargo xtask autobahn`)");
    }
    for visibility in [bench::Visibility::Full, bench::Visibility::Interest] {
        step("benchmark smoke run (arena, N = 10, not recorded)");
        let smoke = bench::ArenaOptions {
            counts: vec![10],
            warmup: std::time::Duration::from_secs(1),
            window: std::time::Duration::from_secs(3),
            common: bench::CommonOptions { profile: Profile::Dev, record: false, ..Default::default() },
            visibility,
            // The second run also covers bots that follow the server's input timing.
            input_timing: visibility == bench::Visibility::Interest,
            loss_percent: None,
        };
        bench::arena(root, &smoke).context("the arena benchmark smoke run failed")?;
    }
    step("benchmark smoke run (whiteboard, W = 2, 200 strokes, not recorded)");
    // On one worker thread: the server's `--workers` is exercised end to end.
    let smoke = bench::WhiteboardOptions {
        writers: vec![2],
        strokes: 200,
        common: bench::CommonOptions {
            profile: Profile::Dev,
            record: false,
            server_workers: Some(1),
            ..Default::default()
        },
    };
    bench::whiteboard(root, &smoke).context("the whiteboard benchmark smoke run failed")?;
    step("benchmark smoke run (cluster, 30 rooms, one failover, not recorded)");
    let smoke = bench::ClusterOptions {
        rooms: vec![30],
        window: std::time::Duration::from_secs(1),
        failovers: 1,
        common: bench::CommonOptions { profile: Profile::Dev, record: false, ..Default::default() },
    };
    bench::cluster(root, &smoke).context("the cluster benchmark smoke run failed")?;
    step("benchmark smoke run (idle, 100 connections, not recorded)");
    let smoke = bench::IdleOptions {
        counts: vec![100],
        per_room: 10,
        window: std::time::Duration::from_secs(1),
        ping_every: Some(std::time::Duration::from_secs(1)),
        common: bench::CommonOptions { profile: Profile::Dev, record: false, ..Default::default() },
    };
    bench::idle(root, &smoke).context("the idle benchmark smoke run failed")?;
    let passed = rust.passed + agones.passed + browser.passed;
    println!("\ntotal: {passed} passed, {} failed", rust.failed + agones.failed + browser.failed);
    Ok(())
}

/// The outcome of a test runner, with the counts from its summary lines.
struct Counted {
    success: bool,
    passed: u64,
    failed: u64,
}

/// Runs a test command, echoing its output as it comes, and adds up the counts from cargo's
/// `test result: ok. N passed; M failed` lines and the browser runner's `N passed, M failed`.
fn run_counting(command: &mut Command) -> Result<Counted> {
    use std::io::{BufRead, BufReader};
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        let summary = line
            .strip_prefix("test result: ")
            .map(|rest| rest.replace(';', ","))
            .or_else(|| (line.ends_with(" failed") && line.contains(" passed, ")).then(|| line.clone()));
        if let Some(summary) = summary {
            for part in summary.split(',') {
                let words: Vec<&str> = part.split_whitespace().collect();
                match words.as_slice() {
                    [.., n, "passed"] => passed += n.parse::<u64>().unwrap_or(0),
                    [.., n, "failed"] => failed += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    Ok(Counted { success: child.wait()?.success(), passed, failed })
}

fn lint() -> Result<()> {
    ensure_wasm_target()?;
    step("rustfmt");
    if !cargo().args(["fmt", "--all", "--", "--check"]).status()?.success() {
        bail!("code is not formatted: run `cargo fmt --all`");
    }
    step("clippy (native)");
    if !cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]).status()?.success()
    {
        bail!("clippy found problems");
    }
    step("clippy (wasm32 client)");
    let wasm_clippy = cargo()
        .args([
            "clippy",
            "--package",
            "easel-client",
            "--target",
            "wasm32-unknown-unknown",
            "--locked",
            "--",
            "-D",
            "warnings",
        ])
        .status()?;
    if !wasm_clippy.success() {
        bail!("clippy found problems in the wasm client");
    }
    step("clippy (the server and its tests with the agones feature)");
    ensure_protoc()?;
    let agones_clippy = cargo()
        .args(["clippy", "--package", "easel-tests", "--features", "agones", "--all-targets", "--locked"])
        .args(["--", "-D", "warnings"])
        .status()?;
    if !agones_clippy.success() {
        bail!("clippy found problems with the agones feature");
    }
    Ok(())
}

/// `protoc`, which the Agones SDK's build needs (Debian's protobuf-compiler).
fn ensure_protoc() -> Result<()> {
    if Path::new("/usr/bin/protoc").exists() {
        return Ok(());
    }
    step("installing Debian's protobuf-compiler (apt-get), for the agones feature");
    apt::install(&["protobuf-compiler"])
}

pub(crate) fn ensure_wasm_target() -> Result<()> {
    let installed =
        Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    step("installing the wasm32-unknown-unknown target (rustup)");
    if !Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]).status()?.success() {
        bail!("could not add the wasm32 target");
    }
    Ok(())
}

fn ensure_chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    step("installing Debian's chromium (apt-get)");
    apt::install(&["chromium"])
}

/// PostgreSQL's server programs, for the cluster's tests (which start private servers of their
/// own: nothing is started here).
fn ensure_postgres() -> Result<()> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| versions.flatten().any(|v| v.path().join("bin").join("postgres").exists()))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    step("installing Debian's postgresql (apt-get)");
    apt::install(&["postgresql"])
}

fn ensure_playwright(root: &Path) -> Result<()> {
    let e2e = root.join("tests").join("e2e");
    if e2e.join("node_modules").join("playwright-core").exists() {
        return Ok(());
    }
    step("installing playwright-core (npm ci)");
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&e2e)
        .status()
        .context("running npm")?;
    if !status.success() {
        bail!("npm ci failed in tests/e2e");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

pub(crate) fn step(what: &str) {
    println!("\n==> {what}");
}
