//! `bench arena --loss PERCENT`: the benchmark runs again inside a network namespace of its own
//! whose loopback drops that share of packets at random (nftables' `numgen random` on the input
//! hook, which every loopback packet passes once). Both transports lose packets alike, at the
//! packet level: TCP retransmits what was lost and holds back what follows; a QUIC datagram is
//! simply gone. (This kernel has no netem; nftables needs no module beyond nf_tables.)

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{apt, step};

/// Set in the environment of the benchmark run inside the namespace.
const INSIDE: &str = "EASEL_BENCH_LOSSY_NAMESPACE";

/// Whether this process runs inside a lossy namespace already.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// A network namespace with a lossy loopback, deleted when dropped.
struct LossyNamespace {
    name: String,
}

impl LossyNamespace {
    fn create(percent: f64) -> Result<Self> {
        if !apt::is_root() {
            bail!("--loss makes a network namespace, which needs root");
        }
        if Command::new("nft").arg("--version").output().is_err() {
            apt::install(&["nftables"])?;
        }
        let name = format!("easel-loss-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let namespace = Self { name };
        let in_namespace = |program: &str, args: &[&str]| {
            let status = Command::new("ip").args(["netns", "exec", &namespace.name, program]).args(args).status()?;
            if !status.success() {
                bail!("{program} {} failed in {}", args.join(" "), namespace.name);
            }
            Ok(())
        };
        in_namespace("ip", &["link", "set", "lo", "up"])?;
        in_namespace("nft", &["add", "table", "inet", "easel_loss"])?;
        in_namespace("nft", &["add chain inet easel_loss input { type filter hook input priority 0; }"])?;
        let per_ten_thousand = (percent * 100.0).round() as u32;
        in_namespace(
            "nft",
            &[&format!("add rule inet easel_loss input numgen random mod 10000 < {per_ten_thousand} drop")],
        )?;
        Ok(namespace)
    }
}

impl Drop for LossyNamespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let status = Command::new("ip").args(args).status().context("running ip (iproute2)")?;
    if !status.success() {
        bail!("ip {} failed", args.join(" "));
    }
    Ok(())
}

/// Runs this xtask again with `args` inside a namespace whose loopback loses `percent` % of the
/// packets, and deletes the namespace afterwards.
pub fn run_inside(percent: f64, args: &[String]) -> Result<()> {
    if !(0.0..=50.0).contains(&percent) {
        bail!("--loss is a percentage from 0 to 50, not {percent}");
    }
    let namespace = LossyNamespace::create(percent)?;
    step(&format!("in network namespace {}: loopback drops {percent} % of packets", namespace.name));
    let status = Command::new("ip")
        .args(["netns", "exec", &namespace.name])
        .arg(std::env::current_exe()?)
        .args(args)
        .env(INSIDE, &namespace.name)
        .status()?;
    if !status.success() {
        bail!("the benchmark in the lossy namespace failed");
    }
    Ok(())
}
