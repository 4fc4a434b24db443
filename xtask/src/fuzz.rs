//! `cargo xtask fuzz [--seconds N] [--target NAME] [--minimize]`: runs each coverage-guided fuzz
//! target (`fuzz/`, cargo-fuzz with libFuzzer on a nightly toolchain) for N seconds, growing its
//! corpus in `fuzz/corpus/TARGET`; crashers land in `fuzz/artifacts/TARGET`. Prints each
//! target's executions and findings. Commit the corpus (`--minimize` first) and every crasher:
//! the stable test `tests/tests/fuzz_corpus.rs` replays both.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{step, target_dir};

pub struct FuzzOptions {
    seconds: u64,
    only: Option<String>,
    minimize: bool,
}

impl FuzzOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self { seconds: 60, only: None, minimize: false };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
                "--target" => options.only = Some(value()?.clone()),
                "--minimize" => options.minimize = true,
                other => bail!("unknown fuzz option {other}"),
            }
        }
        Ok(options)
    }
}

/// What one target's run came to.
struct Outcome {
    target: String,
    executions: u64,
    corpus: usize,
    crashers: usize,
}

pub fn run(root: &Path, options: &FuzzOptions) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz = root.join("fuzz");
    let mut targets: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))?
        .filter_map(Result::ok)
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    targets.sort();
    if let Some(only) = &options.only {
        if !targets.contains(only) {
            bail!("no fuzz target {only}: there are {}", targets.join(", "));
        }
        targets.retain(|t| t == only);
    }
    let mut outcomes = Vec::new();
    for target in targets {
        step(&format!("fuzzing {target} for {} s", options.seconds));
        let corpus = fuzz.join("corpus").join(&target);
        std::fs::create_dir_all(&corpus)?;
        let crashers_before = count(&fuzz.join("artifacts").join(&target));
        let output = cargo_fuzz(root)
            .args(["run", &target])
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={}", options.seconds), "-print_final_stats=1"])
            .stderr(Stdio::piped())
            .output()
            .context("running cargo fuzz")?;
        let log = String::from_utf8_lossy(&output.stderr);
        let executions = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0);
        if options.minimize {
            step(&format!("minimizing the corpus of {target}"));
            let status = cargo_fuzz(root).args(["cmin", &target]).arg(&corpus).stderr(Stdio::null()).status()?;
            if !status.success() {
                bail!("cargo fuzz cmin {target} failed");
            }
        }
        let crashers = count(&fuzz.join("artifacts").join(&target)) - crashers_before;
        if !output.status.success() && crashers == 0 {
            println!("{log}");
            bail!("cargo fuzz run {target} failed without a crasher");
        }
        outcomes.push(Outcome { target, executions, corpus: count(&corpus), crashers });
    }
    println!("\n{:<16} {:>14} {:>8} {:>9}", "target", "executions", "corpus", "crashers");
    for o in &outcomes {
        println!("{:<16} {:>14} {:>8} {:>9}", o.target, o.executions, o.corpus, o.crashers);
    }
    let crashers: usize = outcomes.iter().map(|o| o.crashers).sum();
    if crashers > 0 {
        bail!("{crashers} crashers in fuzz/artifacts/: fix them, and commit them so the tests replay them");
    }
    Ok(())
}

/// `cargo +nightly fuzz`, building into the shared `target/`.
fn cargo_fuzz(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.args(["+nightly", "fuzz"]).current_dir(root).env("CARGO_TARGET_DIR", target_dir(root).join("fuzz"));
    command
}

/// A nightly toolchain and cargo-fuzz, installed from crates.io when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let toolchains = Command::new("rustup").args(["toolchain", "list"]).output().context("running rustup")?;
    if !String::from_utf8_lossy(&toolchains.stdout).lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "fuzzing needs a nightly toolchain (libFuzzer's instrumentation): `rustup toolchain install nightly`, \
             then run this again. The committed corpus is replayed on stable by `cargo test` regardless."
        );
    }
    let installed = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if installed.is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    step("installing cargo-fuzz (cargo install)");
    if !Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]).status()?.success() {
        bail!("cargo install cargo-fuzz failed");
    }
    Ok(())
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.filter_map(Result::ok).count())
}
