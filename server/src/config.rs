//! Server configuration: command-line flags, `EASEL_*` environment variables and an optional TOML
//! file, validated into one `Config` that is passed explicitly (never global).
//!
//! Precedence: flag > environment > file > default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use easel_protocol::game::Rules;
use serde::Deserialize;

use crate::store::Location;

/// `easel serve` flags. Every flag also reads an `EASEL_*` variable and a key of the same name
/// (with `_` for `-`) in the `--config` file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys like `tick_rate = 30`).
    #[arg(long, env = "EASEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "EASEL_BIND", value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// TCP port for HTTP and WebSocket; 0 picks a free one [default: 8080].
    #[arg(long, env = "EASEL_PORT")]
    pub port: Option<u16>,
    /// Simulation ticks per second, 1 to 120 [default: 30].
    #[arg(long, env = "EASEL_TICK_RATE", value_name = "HZ")]
    pub tick_rate: Option<u16>,
    /// Serve the browser client from this directory (a `cargo xtask dist` output), read on each
    /// request, instead of the one built into the binary: for client development.
    #[arg(long, env = "EASEL_ASSETS_DIR", value_name = "DIR")]
    pub assets_dir: Option<PathBuf>,
    /// An Origin allowed to open a WebSocket, e.g. https://play.example.com; repeat for more
    /// [default: same origin as the request's Host].
    #[arg(long = "allowed-origin", env = "EASEL_ALLOWED_ORIGINS", value_delimiter = ',', value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// The least severe log lines written [default: info].
    #[arg(long, env = "EASEL_LOG_LEVEL", value_name = "LEVEL", value_enum)]
    pub log_level: Option<LogLevel>,
    /// How log lines are written: `text` for people, `json` (one object per line, a connection's
    /// id, room and peer address in its `span`) for log shippers [default: text].
    #[arg(long, env = "EASEL_LOG_FORMAT", value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Directory of the embedded database (whiteboards, identities) [default: data].
    #[arg(long, env = "EASEL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Game rules of every room [default: game].
    #[arg(long, env = "EASEL_RULES", value_name = "PRESET", value_enum)]
    pub rules: Option<RulesPreset>,
    /// How long a player whose connection dropped is kept for a resume, e.g. 30s; 0 turns
    /// resuming off [default: 30s].
    #[arg(long, env = "EASEL_RESUME_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub resume_grace: Option<Duration>,
    /// Interest management: each client is sent the players within this many world units of its
    /// own (a square, at least 100); 0 sends every player to everyone [default: 0].
    #[arg(long, env = "EASEL_VIEW_DISTANCE", value_name = "UNITS")]
    pub view_distance: Option<f32>,
    /// Snapshot bytes per second each client may be sent; over it, the nearest and most changed
    /// players go first and the rest catch up later (0: no limit) [default: 0].
    #[arg(long, env = "EASEL_SNAPSHOT_BUDGET", value_name = "BYTES_PER_S")]
    pub snapshot_budget: Option<u32>,
    /// Runtimes (threads) for rooms and connections, 1 to 256; a room and its WebSockets share one
    /// [default: one per CPU core].
    #[arg(long, env = "EASEL_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// WebTransport (HTTP/3 over QUIC) for browsers that have it and for native clients; pages
    /// fall back to the WebSocket when it is off or blocked [default: on].
    #[arg(long, env = "EASEL_QUIC", value_name = "SWITCH", value_enum)]
    pub quic: Option<Switch>,
    /// UDP port for WebTransport; 0 picks a free one [default: the HTTP port's number].
    #[arg(long, env = "EASEL_UDP_PORT", value_name = "PORT")]
    pub udp_port: Option<u16>,
    /// Certificate chain (PEM), with --tls-key: the TCP port then serves HTTPS and wss:// (and
    /// HTTP/2 for pages), and WebTransport presents it too. Reloaded when the files change or
    /// on SIGHUP [default: plain HTTP, and WebTransport with a self-signed certificate valid 14
    /// days and replaced weekly, whose hash pages fetch from /webtransport].
    #[arg(long, env = "EASEL_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "EASEL_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The token of the host's console (/admin), at least 16 characters [default: one made on
    /// first start, stored in the data directory as admin-token, and logged once].
    #[arg(long, env = "EASEL_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also listen on this TCP port for plain HTTP and answer every request with a redirect to
    /// HTTPS (needs --tls-cert), e.g. 80.
    #[arg(long, env = "EASEL_REDIRECT_HTTP", value_name = "PORT")]
    pub redirect_http: Option<u16>,
    /// Connections (WebSocket and WebTransport together) the server holds at most; more are
    /// refused [default: 10000].
    #[arg(long, env = "EASEL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// On SIGTERM or Ctrl-C, how long rooms play on while the server takes no new players and
    /// /readyz says it is not ready; it stops sooner once everyone has left. 0 stops at once
    /// [default: 20s].
    #[arg(long, env = "EASEL_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Join a cluster whose shared store and room directory is this PostgreSQL database, e.g.
    /// postgres://easel@db:5432/easel (needs --public-url and --cluster-secret); each room then
    /// lives on one node and players are redirected to it [default: one node, SQLite].
    #[arg(long, env = "EASEL_CLUSTER", value_name = "POSTGRES_URL", hide_env_values = true)]
    pub cluster: Option<String>,
    /// How players reach this node, e.g. https://node-3.example.com (in cluster mode): where
    /// other nodes redirect the players of this node's rooms.
    #[arg(long, env = "EASEL_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The secret every node of the cluster shares, at least 16 characters: it signs the seats
    /// that redirects hand out.
    #[arg(long, env = "EASEL_CLUSTER_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Tell Agones this server's life through its SDK sidecar: Ready once the database answers,
    /// health while rooms tick, Allocated while it holds rooms (its `rooms` counter), Shutdown
    /// after a drain; in a cluster, --public-url defaults to the GameServer's address and port
    /// [default: off]. (Built with the `agones` feature only.)
    #[cfg(feature = "agones")]
    #[arg(long, env = "EASEL_AGONES", value_name = "SWITCH", value_enum)]
    pub agones: Option<Switch>,
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// The same settings as read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    bind: Option<IpAddr>,
    port: Option<u16>,
    tick_rate: Option<u16>,
    assets_dir: Option<PathBuf>,
    allowed_origins: Option<Vec<String>>,
    log_level: Option<LogLevel>,
    log_format: Option<LogFormat>,
    rules: Option<RulesPreset>,
    data_dir: Option<PathBuf>,
    resume_grace: Option<String>,
    view_distance: Option<f32>,
    snapshot_budget: Option<u32>,
    workers: Option<usize>,
    quic: Option<Switch>,
    udp_port: Option<u16>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    redirect_http: Option<u16>,
    admin_token: Option<String>,
    max_connections: Option<usize>,
    drain_timeout: Option<String>,
    cluster: Option<String>,
    public_url: Option<String>,
    cluster_secret: Option<String>,
    #[cfg(feature = "agones")]
    agones: Option<Switch>,
}

/// Where the browser client's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pages {
    /// The client built into the binary from `dist/` (none in a debug build made before
    /// `cargo xtask dist`: then every page says how to build it).
    Embedded,
    /// A built client in a directory (`--assets-dir`), read on each request, so a client rebuilt
    /// in place is served at once: for client development.
    Directory(PathBuf),
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tick_rate: u16,
    /// Where the browser client's files come from.
    pub pages: Pages,
    /// Origins allowed to open a WebSocket; empty means "the request's own origin only".
    pub allowed_origins: Vec<String>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub rules: Rules,
    pub limits: Limits,
    pub interest: Interest,
    /// Where whiteboards and identities are stored.
    pub storage: Location,
    /// Shards, each a single-threaded runtime on a thread of its own (`crate::shards`); `None` is
    /// one per core. A room and its WebSockets run on one; rooms spread over all of them. Fewer
    /// suit a host whose server shares its cores with other work.
    pub workers: Option<usize>,
    /// The host's certificate: HTTPS and `wss://` on the TCP port. `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// A plain-HTTP port that redirects every request to HTTPS.
    pub redirect_http: Option<u16>,
    /// The console's token; `None`: the one stored in the data directory, or a new one.
    pub admin_token: Option<String>,
    /// WebTransport, unless it is off.
    pub quic: Option<Quic>,
    /// How long rooms play on after a stop is asked for, taking no new players.
    pub drain_timeout: Duration,
    /// This node's place in a cluster; `None`: a single node.
    pub cluster: Option<ClusterSettings>,
    /// Where to tell Agones the server's life (`agones` feature); `None`: nowhere.
    pub agones: Option<AgonesSidecar>,
}

/// The Agones SDK server the GameServer's pod runs beside the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgonesSidecar {
    /// Its gRPC port on localhost; `None`: `AGONES_SDK_GRPC_PORT`, as the pod sets it, or 9357.
    pub port: Option<u16>,
}

/// A node of a cluster: its rooms' boards are in `storage` (`Location::Postgres`), which also
/// holds the room directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// How players reach this node.
    pub public_url: PublicUrl,
    /// Signs seats; shared by every node.
    pub secret: String,
}

/// How players reach a node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicUrl {
    /// `http(s)://host[:port]`, no path, as the host gave it.
    Given(String),
    /// The address and first port Agones gave the GameServer, over plain HTTP.
    FromAgones,
}

/// WebTransport's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quic {
    /// `None`: the port number the HTTP listener got.
    pub udp_port: Option<u16>,
    pub certificate: CertificateSource,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the certificate WebTransport presents comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// The host's certificate, the one HTTPS presents.
    Files(TlsFiles),
    /// Made by the server and replaced on `schedule` (browsers accept such a certificate, by its
    /// hash, only if it is valid for at most 14 days).
    SelfSigned { schedule: RotationSchedule },
}

/// When the server's own certificates are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSchedule {
    /// A certificate is presented for this long after it was made…
    pub present_for: Duration,
    /// …and its successor is made, and offered to pages, this long before it takes over.
    pub announce_before: Duration,
}

impl Default for RotationSchedule {
    /// Halfway through the 14 days a certificate is valid: a session may last a week and still
    /// have started on a valid one, and a day of clock skew either way changes nothing.
    fn default() -> Self {
        Self { present_for: Duration::from_secs(7 * 24 * 3600), announce_before: Duration::from_secs(3600) }
    }
}

/// Bounds that keep one client from costing the server more than its share.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection must send `Hello` within this time after the upgrade.
    pub hello_timeout: Duration,
    /// Time allowed to read an HTTP request head (slowloris bound).
    pub http_header_timeout: Duration,
    /// A single WebSocket write that takes longer than this closes the connection.
    pub write_timeout: Duration,
    /// Reliable messages (events, chat) queued for one client before it is dropped as too slow.
    pub outbound_queue: usize,
    /// Messages per second a client may send, sustained; `message_burst` more in a burst.
    pub messages_per_second: f64,
    pub message_burst: f64,
    /// Chat lines per second a client may send, sustained; `chat_burst` more in a burst.
    pub chats_per_second: f64,
    pub chat_burst: f64,
    /// Players in one room.
    pub room_capacity: usize,
    /// Presence updates per second a client may send (more are dropped, not punished).
    pub presence_per_second: f64,
    /// Board ops per second a client may send, sustained, and in a burst: a client coming back
    /// online resends its offline edits at once, so the burst is large; they do not count
    /// against `messages_per_second`.
    pub board_ops_per_second: f64,
    pub board_op_burst: f64,
    /// Board ops waiting for storage in one room before new ones are refused (full disk).
    pub max_uncommitted_ops: usize,
    /// How long a player whose connection dropped waits for a resume before it leaves.
    pub resume_grace: Duration,
    /// Connections held at once, WebSocket and WebTransport together.
    pub max_connections: usize,
}

/// What each client is sent of the world (see `room::interest`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interest {
    /// Every player within this Chebyshev distance (world units) of a client's own is sent (with
    /// a few more: views are shared per cell, see `room::interest`). 0: everyone, everywhere.
    pub view_distance: f32,
    /// Snapshot bytes per second per client; 0: unlimited.
    pub snapshot_budget: u32,
}

impl Interest {
    /// Every player to every client, unlimited: the benchmark's baseline.
    pub const FULL_VISIBILITY: Interest = Interest { view_distance: 0.0, snapshot_budget: 0 };
}

impl Default for Interest {
    /// Off: in the game's 2,000-unit world a view that fills a screen (1,000 units each way)
    /// still holds most of the world, so interest management saves little bandwidth there and
    /// costs CPU (an encoding per cell instead of one for everyone; docs/bench/HISTORY.md). It is
    /// for bigger worlds and crowded rooms, where an operator turns it on.
    fn default() -> Self {
        Self::FULL_VISIBILITY
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            http_header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            // Whiteboard bursts (a client resending hundreds of offline edits, relayed to everyone)
            // must fit; at ~100 bytes a message this bounds a stuck client to about 0.5 MB.
            outbound_queue: 4096,
            // 30 inputs + 1 ping a second is an honest client; four times that absorbs bursts
            // after a stall without letting a flood through.
            messages_per_second: 120.0,
            message_burst: 240.0,
            chats_per_second: 1.0,
            chat_burst: 5.0,
            room_capacity: 10_000,
            presence_per_second: 30.0,
            board_ops_per_second: 200.0,
            board_op_burst: 1_000.0,
            max_uncommitted_ops: 10_000,
            resume_grace: Duration::from_secs(30),
            // Half the 20,000 files a process may open here: room for the database, logs and a
            // burst of connections being torn down.
            max_connections: 10_000,
        }
    }
}

impl Config {
    /// A configuration for tests and embedding: 127.0.0.1, port 0, no static pages.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            tick_rate: 30,
            pages: Pages::Embedded,
            allowed_origins: Vec::new(),
            log_level: LogLevel::Warn,
            log_format: LogFormat::Text,
            rules: Rules::GAME,
            limits: Limits::default(),
            interest: Interest::default(),
            storage: Location::Memory,
            workers: None,
            tls: None,
            redirect_http: None,
            admin_token: None,
            quic: None,
            // Tests stop at once unless they test the drain.
            drain_timeout: Duration::ZERO,
            cluster: None,
            agones: None,
        }
    }

    /// Fixed simulation step in seconds.
    pub fn tick_seconds(&self) -> f32 {
        1.0 / f32::from(self.tick_rate)
    }
}

/// How much the server logs: this level and the more severe ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// How log lines are written (to stderr, decision 0029).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The game rules every room of a server plays by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RulesPreset {
    /// Collectable orbs that reappear elsewhere.
    Game,
    /// The static-orb world of the arena benchmark workload (docs/bench/WORKLOADS.md).
    ArenaBenchmark,
}

impl RulesPreset {
    pub fn rules(self) -> Rules {
        match self {
            RulesPreset::Game => Rules::GAME,
            RulesPreset::ArenaBenchmark => Rules::ARENA_BENCHMARK,
        }
    }
}

/// How long rooms play on after a stop by default: inside the 30 s a service manager or an
/// orchestrator usually waits after SIGTERM before it kills.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("resume_grace: {0}")]
    ResumeGrace(String),
    #[error("drain_timeout: {0}")]
    DrainTimeout(String),
    #[error("tick_rate must be between 1 and 120, got {0}")]
    TickRate(u16),
    #[error(
        "assets directory {0} does not exist: build the client into dist/ with `cargo xtask dist`, \
         or leave --assets-dir out to serve the client built into the server"
    )]
    MissingAssets(PathBuf),
    #[error("allowed origin {0:?} must look like http://host[:port] or https://host[:port]")]
    Origin(String),
    #[error("view_distance must be 0 (everyone) or between 100 and 10000 world units, got {0}")]
    ViewDistance(f32),
    #[error("workers must be between 1 and 256, got {0}")]
    Workers(usize),
    #[error("max_connections must be at least 1")]
    MaxConnections,
    #[error("tls_cert and tls_key go together: give both, or neither for plain HTTP")]
    TlsPair,
    #[error("redirect_http redirects to HTTPS: it needs tls_cert and tls_key")]
    RedirectWithoutTls,
    #[error("admin_token must be at least 16 characters")]
    AdminToken,
    #[error("cluster mode needs public_url (how players reach this node) and cluster_secret")]
    ClusterIncomplete,
    #[error("public_url and cluster_secret belong to cluster mode: give cluster too")]
    ClusterSettingsWithoutCluster,
    #[error("cluster_secret must be at least 16 characters")]
    ClusterSecret,
    #[error("public_url {0:?} must be http:// or https:// with a host and no path")]
    PublicUrl(String),
    #[error("cluster {0:?} is not a postgres:// or postgresql:// URL")]
    ClusterUrl(String),
}

impl ServeArgs {
    /// Merges flags, environment (already folded in by clap), file and defaults, and validates.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let defaults = Config::for_tests();
        let bind = self.bind.or(file.bind).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = self.port.or(file.port).unwrap_or(8080);
        let tick_rate = self.tick_rate.or(file.tick_rate).unwrap_or(defaults.tick_rate);
        if !(1..=120).contains(&tick_rate) {
            return Err(ConfigError::TickRate(tick_rate));
        }
        let pages = match self.assets_dir.or(file.assets_dir) {
            Some(dir) if !dir.is_dir() => return Err(ConfigError::MissingAssets(dir)),
            Some(dir) => Pages::Directory(dir),
            None => Pages::Embedded,
        };
        let allowed_origins = if self.allowed_origins.is_empty() {
            file.allowed_origins.unwrap_or_default()
        } else {
            self.allowed_origins
        };
        let allowed_origins =
            allowed_origins.into_iter().map(|o| validate_origin(o.trim())).collect::<Result<Vec<_>, _>>()?;
        let log_level = self.log_level.or(file.log_level).unwrap_or(LogLevel::Info);
        let log_format = self.log_format.or(file.log_format).unwrap_or(LogFormat::Text);
        let rules = self.rules.or(file.rules).unwrap_or(RulesPreset::Game).rules();
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let mut limits = Limits::default();
        if let Some(grace) = self.resume_grace {
            limits.resume_grace = grace;
        } else if let Some(text) = &file.resume_grace {
            limits.resume_grace = parse_duration(text).map_err(ConfigError::ResumeGrace)?;
        }
        let mut interest = Interest::default();
        if let Some(distance) = self.view_distance.or(file.view_distance) {
            if !(distance == 0.0 || (100.0..=10_000.0).contains(&distance)) {
                return Err(ConfigError::ViewDistance(distance));
            }
            interest.view_distance = distance;
        }
        if let Some(budget) = self.snapshot_budget.or(file.snapshot_budget) {
            interest.snapshot_budget = budget;
        }
        let workers = self.workers.or(file.workers);
        if let Some(n) = workers
            && !(1..=256).contains(&n)
        {
            return Err(ConfigError::Workers(n));
        }
        if let Some(max) = self.max_connections.or(file.max_connections) {
            if max == 0 {
                return Err(ConfigError::MaxConnections);
            }
            limits.max_connections = max;
        }
        let tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::TlsPair),
        };
        let redirect_http = self.redirect_http.or(file.redirect_http);
        let admin_token = self.admin_token.or(file.admin_token).map(|token| token.trim().to_owned());
        if admin_token.as_ref().is_some_and(|token| token.len() < crate::net::admin::MIN_TOKEN_CHARS) {
            return Err(ConfigError::AdminToken);
        }
        if redirect_http.is_some() && tls.is_none() {
            return Err(ConfigError::RedirectWithoutTls);
        }
        let certificate = match &tls {
            Some(files) => CertificateSource::Files(files.clone()),
            None => CertificateSource::SelfSigned { schedule: RotationSchedule::default() },
        };
        let drain_timeout = match (self.drain_timeout, &file.drain_timeout) {
            (Some(timeout), _) => timeout,
            (None, Some(text)) => parse_duration(text).map_err(ConfigError::DrainTimeout)?,
            (None, None) => DEFAULT_DRAIN_TIMEOUT,
        };
        #[cfg(feature = "agones")]
        let agones = (self.agones.or(file.agones) == Some(Switch::On)).then_some(AgonesSidecar { port: None });
        #[cfg(not(feature = "agones"))]
        let agones = None;
        let (storage, cluster) = match (
            self.cluster.or(file.cluster),
            self.public_url.or(file.public_url),
            self.cluster_secret.or(file.cluster_secret),
        ) {
            (None, None, None) => (Location::Directory(data_dir), None),
            (None, _, _) => return Err(ConfigError::ClusterSettingsWithoutCluster),
            (Some(database), public_url, Some(secret)) if public_url.is_some() || agones.is_some() => {
                if !(database.starts_with("postgres://") || database.starts_with("postgresql://")) {
                    return Err(ConfigError::ClusterUrl(database));
                }
                if secret.len() < crate::cluster::MIN_SECRET_CHARS {
                    return Err(ConfigError::ClusterSecret);
                }
                let public_url = match public_url {
                    Some(url) => PublicUrl::Given(validate_public_url(url.trim())?),
                    None => PublicUrl::FromAgones,
                };
                (Location::Postgres(database), Some(ClusterSettings { public_url, secret }))
            }
            (Some(_), _, _) => return Err(ConfigError::ClusterIncomplete),
        };
        let quic = match self.quic.or(file.quic).unwrap_or(Switch::On) {
            Switch::On => Some(Quic { udp_port: self.udp_port.or(file.udp_port), certificate }),
            Switch::Off => None,
        };
        Ok(Config {
            tls,
            redirect_http,
            admin_token,
            quic,
            storage,
            cluster,
            agones,
            listen: SocketAddr::new(bind, port),
            tick_rate,
            pages,
            allowed_origins,
            log_level,
            log_format,
            rules,
            limits,
            interest,
            workers,
            drain_timeout,
        })
    }
}

/// Parses a duration written as `250ms`, `30s` or `2m` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 30s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.to_owned(), message: e.to_string() })
}

/// `http(s)://host[:port]`, without a trailing slash.
fn validate_public_url(url: &str) -> Result<String, ConfigError> {
    let url = url.trim_end_matches('/');
    let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(url.to_owned()),
        _ => Err(ConfigError::PublicUrl(url.to_owned())),
    }
}

fn validate_origin(origin: &str) -> Result<String, ConfigError> {
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(origin.to_owned()),
        _ => Err(ConfigError::Origin(origin.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_from_the_binary_unless_a_directory_is_named() {
        assert_eq!(ServeArgs::default().into_config().unwrap().pages, Pages::Embedded);
        let dir = std::env::temp_dir();
        let config = ServeArgs { assets_dir: Some(dir.clone()), ..ServeArgs::default() }.into_config().unwrap();
        assert_eq!(config.pages, Pages::Directory(dir));
    }

    #[test]
    fn defaults_listen_on_localhost_8080_at_30_hz() {
        let config = ServeArgs::default().into_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.tick_rate, 30);
        assert_eq!(config.rules, Rules::GAME);
        assert_eq!(config.workers, None, "one worker per core");
    }

    #[test]
    fn the_drain_lasts_20_s_unless_told_and_a_bad_one_is_named() {
        assert_eq!(ServeArgs::default().into_config().unwrap().drain_timeout, Duration::from_secs(20));
        let flag = ServeArgs { drain_timeout: Some(Duration::ZERO), ..ServeArgs::default() };
        assert_eq!(flag.into_config().unwrap().drain_timeout, Duration::ZERO, "0 stops at once");
        let dir = std::env::temp_dir().join(format!("easel-config-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("easel.toml");
        std::fs::write(&file, "drain_timeout = \"45s\"\n").unwrap();
        let config = ServeArgs { config: Some(file.clone()), ..ServeArgs::default() }.into_config().unwrap();
        assert_eq!(config.drain_timeout, Duration::from_secs(45));
        std::fs::write(&file, "drain_timeout = \"soon\"\n").unwrap();
        let error = ServeArgs { config: Some(file), ..ServeArgs::default() }.into_config().unwrap_err();
        assert!(error.to_string().starts_with("drain_timeout:"), "{error}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("easel-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("easel.toml");
        std::fs::write(
            &file,
            "port = 9000\ntick_rate = 20\nrules = \"arena-benchmark\"\nview_distance = 0\nworkers = 1\n",
        )
        .unwrap();
        let config = ServeArgs { config: Some(file), port: Some(9100), ..ServeArgs::default() }.into_config().unwrap();
        assert_eq!(config.listen.port(), 9100, "the flag wins over the file");
        assert_eq!(config.tick_rate, 20, "the file wins over the default");
        assert_eq!(config.rules, Rules::ARENA_BENCHMARK);
        assert_eq!(config.interest.view_distance, 0.0, "0 from the file turns interest management off");
        assert_eq!(config.workers, Some(1));
    }

    #[test]
    fn bad_settings_are_refused_with_a_clear_error() {
        let zero_tick = ServeArgs { tick_rate: Some(0), ..ServeArgs::default() };
        assert!(matches!(zero_tick.into_config(), Err(ConfigError::TickRate(0))));
        let no_workers = ServeArgs { workers: Some(0), ..ServeArgs::default() };
        assert!(matches!(no_workers.into_config(), Err(ConfigError::Workers(0))));
        let negative_view = ServeArgs { view_distance: Some(-5.0), ..ServeArgs::default() };
        assert!(matches!(negative_view.into_config(), Err(ConfigError::ViewDistance(_))));
        let bad_origin = ServeArgs { allowed_origins: vec!["example.com".into()], ..ServeArgs::default() };
        assert!(matches!(bad_origin.into_config(), Err(ConfigError::Origin(_))));
        let no_assets = ServeArgs { assets_dir: Some("/nonexistent/easel".into()), ..Default::default() };
        let message = no_assets.into_config().unwrap_err().to_string();
        assert!(message.contains("cargo xtask dist"), "the error says how to fix it: {message}");
    }

    #[test]
    fn cluster_mode_takes_all_three_settings_and_keeps_boards_in_postgres() {
        let args = |cluster: Option<&str>, url: Option<&str>, secret: Option<&str>| ServeArgs {
            cluster: cluster.map(str::to_owned),
            public_url: url.map(str::to_owned),
            cluster_secret: secret.map(str::to_owned),
            ..ServeArgs::default()
        };
        let db = Some("postgres://easel@db:5432/easel");
        let secret = Some("sixteen or more characters");
        let config = args(db, Some("https://node-3.example.com/"), secret).into_config().unwrap();
        assert_eq!(config.storage, Location::Postgres("postgres://easel@db:5432/easel".into()));
        let cluster = config.cluster.unwrap();
        assert_eq!(
            cluster.public_url,
            PublicUrl::Given("https://node-3.example.com".into()),
            "without its trailing slash"
        );
        assert!(matches!(args(db, None, secret).into_config(), Err(ConfigError::ClusterIncomplete)));
        assert!(matches!(
            args(None, Some("http://a:1"), None).into_config(),
            Err(ConfigError::ClusterSettingsWithoutCluster)
        ));
        assert!(matches!(args(db, Some("http://a:1"), Some("short")).into_config(), Err(ConfigError::ClusterSecret)));
        assert!(matches!(args(db, Some("a:1"), secret).into_config(), Err(ConfigError::PublicUrl(_))));
        assert!(matches!(args(db, Some("http://a:1/play"), secret).into_config(), Err(ConfigError::PublicUrl(_))));
        assert!(matches!(
            args(Some("mysql://x"), Some("http://a:1"), secret).into_config(),
            Err(ConfigError::ClusterUrl(_))
        ));
        assert!(args(None, None, None).into_config().unwrap().cluster.is_none());
    }

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_log_level_or_rules_preset_nobody_knows_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("easel-config-level-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("easel.toml");
        std::fs::write(&file, "log_level = \"verbose\"\n").unwrap();
        let message = ServeArgs { config: Some(file.clone()), ..ServeArgs::default() }.into_config().unwrap_err();
        assert!(message.to_string().contains("verbose"), "{message}");
        std::fs::write(&file, "rules = \"arena-benchmark\"\nlog_level = \"debug\"\n").unwrap();
        let config = ServeArgs { config: Some(file), ..ServeArgs::default() }.into_config().unwrap();
        assert_eq!((config.rules, config.log_level), (Rules::ARENA_BENCHMARK, LogLevel::Debug));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("easel-config-typo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("easel.toml");
        std::fs::write(&file, "tick_rte = 20\n").unwrap();
        let result = ServeArgs { config: Some(file), ..ServeArgs::default() }.into_config();
        assert!(matches!(result, Err(ConfigError::ParseFile { .. })), "a typo must not be silently ignored");
    }
}
