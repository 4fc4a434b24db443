//! A private PostgreSQL for a test or a benchmark of the cluster: `initdb` into a temporary
//! directory and `postgres` on a free loopback port, run as the `postgres` user when started by
//! root (PostgreSQL refuses root), and stopped by its PID when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static STARTED: AtomicU32 = AtomicU32::new(0);

pub struct Postgres {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl Postgres {
    /// Starts a new, empty database cluster and waits until it takes connections.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("easel-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).context("creating the database directory")?;
        let user = if running_as_root() { Some(postgres_user()?) } else { None };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).context("giving the directory to postgres")?;
        }
        let status = as_user(Command::new(bin.join("initdb")), user)
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .context("running initdb")?;
        if !status.success() {
            bail!("initdb failed");
        }
        let mut postgres = Self { child: None, dir, port: free_port()?, bin, user };
        postgres.run()?;
        Ok(postgres)
    }

    /// A client of this server's database (its connection driven on the current runtime).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect(&self.url()).await
    }

    /// The postmaster's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash would (immediate shutdown: no checkpoint, the
    /// next start recovers from the log), leaving its files.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same files and port, after `kill`.
    pub fn restart(&mut self) -> Result<()> {
        self.run()
    }

    fn run(&mut self) -> Result<()> {
        let child = as_user(Command::new(self.bin.join("postgres")), self.user)
            .arg("-D")
            .arg(&self.dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            // The files live as long as the test; a crash of the process keeps them in the OS.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        wait_until_accepting(&self.bin, self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's newest PostgreSQL server programs.
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian package postgresql; `cargo xtask test` installs it)")?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().context("no PostgreSQL server under /usr/lib/postgresql")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .context("no postgres user (it comes with Debian's postgresql package)")
}

fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.gid(gid).uid(uid).current_dir(Path::new("/"));
    }
    command
}

/// A client of the database at `url`, its connection driven on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.context("connecting")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("no free port")?.port())
}

fn wait_until_accepting(bin: &Path, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("postgres did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
