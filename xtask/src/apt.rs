//! Installing Debian packages the test command needs (`apt-get`, as root or through sudo),
//! waiting for apt's locks when another apt holds them instead of failing: a fresh machine often
//! runs its own apt at boot.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long to wait for another apt to finish.
const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);
/// Between two tries while apt is locked.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Refreshes the package lists and installs `packages`.
pub fn install(packages: &[&str]) -> Result<()> {
    apt_get(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    apt_get(&install)
}

/// Runs `apt-get ARGS`, again while another apt holds a lock it needs (bounded by `LOCK_WAIT`).
fn apt_get(args: &[&str]) -> Result<()> {
    let started = Instant::now();
    let mut told = false;
    retry_while_locked(
        || run(args),
        || {
            if started.elapsed() > LOCK_WAIT {
                return false;
            }
            if !told {
                println!("another apt holds its lock; waiting for it (up to {} minutes)", LOCK_WAIT.as_secs() / 60);
                told = true;
            }
            std::thread::sleep(RETRY_EVERY);
            true
        },
    )
    .with_context(|| format!("apt-get {}", args.join(" ")))
}

/// What one run of apt-get came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    /// Another apt or dpkg holds a lock this one needs.
    Locked,
    Failed(String),
}

/// Runs `attempt` until it is not `Locked`, as long as `wait` (which sleeps) says to go on.
fn retry_while_locked(mut attempt: impl FnMut() -> Result<Outcome>, mut wait: impl FnMut() -> bool) -> Result<()> {
    loop {
        match attempt()? {
            Outcome::Done => return Ok(()),
            Outcome::Failed(why) => bail!("{why}"),
            Outcome::Locked if !wait() => bail!("another apt held its lock for too long"),
            Outcome::Locked => {}
        }
    }
}

fn run(args: &[&str]) -> Result<Outcome> {
    let mut command = if is_root() {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    // apt waits for dpkg's frontend lock itself for this long; the lists lock of `update` it
    // does not wait for, so a busy lock is retried here too.
    let output = command
        .args(["-o", "DPkg::Lock::Timeout=60"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running apt-get")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Ok(Outcome::Done);
    }
    if is_lock_busy(&stderr) {
        return Ok(Outcome::Locked);
    }
    Ok(Outcome::Failed(format!("failed ({}): {}", output.status, stderr.trim())))
}

/// apt's words for a lock another process holds ("Could not get lock /var/lib/apt/lists/lock.
/// It is held by process 1234", "Unable to lock directory /var/lib/apt/lists/").
fn is_lock_busy(stderr: &str) -> bool {
    stderr.contains("Could not get lock") || stderr.contains("Unable to lock")
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_lock_is_waited_for_and_other_failures_are_not() {
        let mut outcomes = vec![Outcome::Done, Outcome::Locked, Outcome::Locked];
        let mut waits = 0;
        retry_while_locked(
            || Ok(outcomes.pop().unwrap()),
            || {
                waits += 1;
                true
            },
        )
        .unwrap();
        assert_eq!(waits, 2, "two locked tries, then done");

        let mut outcomes = vec![Outcome::Failed("no such package".into()), Outcome::Locked];
        let error = retry_while_locked(|| Ok(outcomes.pop().unwrap()), || true).unwrap_err();
        assert!(error.to_string().contains("no such package"));

        let error = retry_while_locked(|| Ok(Outcome::Locked), || false).unwrap_err();
        assert!(error.to_string().contains("too long"), "the wait is bounded");
    }

    #[test]
    fn apts_lock_messages_are_recognised() {
        assert!(is_lock_busy(
            "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)\nE: Unable to lock directory /var/lib/apt/lists/"
        ));
        assert!(is_lock_busy("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 7 (apt)"));
        assert!(!is_lock_busy("E: Unable to locate package chromiumm"));
    }
}
