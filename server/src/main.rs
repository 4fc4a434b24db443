//! The `easel` binary: parses the command line, sets up logging and the runtime, and runs the
//! server until Ctrl-C or SIGTERM. (The load generator is its own binary, `easel-bot`.)

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use easel::ServeArgs;
use easel::config::LogFormat;

/// glibc's allocator keeps what a long-running server frees in per-thread arenas, so resident
/// memory grows with churn although the heap in use does not; jemalloc returns freed pages to
/// the OS (decision 0040).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "easel", version, about = "Easel: a multiplayer browser game server with a shared whiteboard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the game server (HTTP, WebSocket and the browser client on one port).
    Serve(Box<ServeArgs>),
    /// Certificates for HTTPS.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a self-signed certificate and key for local testing (valid 14 days; browsers do
    /// not trust it unless told to): easel-dev-cert.pem and easel-dev-key.pem.
    Dev {
        /// Where to write them.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// A name the certificate is for, besides localhost, 127.0.0.1 and ::1; repeatable.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Cert(CertCommand::Dev { out, names }) => {
            let mut all = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            all.extend(names);
            let files = easel::net::tls::write_dev_certificate(&out, &all)?;
            println!("wrote {} and {} (for {})", files.cert.display(), files.key.display(), all.join(", "));
            println!("serve with: easel serve --tls-cert {} --tls-key {}", files.cert.display(), files.key.display());
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    #[allow(unused_mut)]
    let mut config = args.into_config()?;
    // Logs go to stderr, where a service manager collects them; stdout carries only the line
    // that says where the server listens, for whoever started it (decision 0029).
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::from(config.log_level))
        .with_target(false)
        // Colours only for a person at a terminal: a service manager's journal would keep the
        // escape codes.
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => logs.init(),
        // The innermost span (a connection's id, transport, peer and room) as `span`; the
        // event's own fields at the top level, beside `level`, `timestamp` and `message`.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    // Shard 0 of the server's runtimes, on this thread; `easel::run` starts the others
    // (`easel::shards`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        // Under Agones (a Passthrough port), the port is the one the GameServer was given.
        #[cfg(feature = "agones")]
        if let Some(sidecar) = config.agones {
            let port = easel::agones::Agones::connect(sidecar).await?.assigned_port().await?;
            tracing::info!(port, "listening on the GameServer's port");
            config.listen.set_port(port);
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        let shutdown = shutdown_signal()?;
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        println!("Easel listening on {scheme}://{address}");
        match &config.pages {
            easel::config::Pages::Directory(dir) => {
                tracing::info!(assets = %dir.display(), "serving the client from a directory")
            }
            easel::config::Pages::Embedded if !easel::net::embedded_client() => tracing::warn!(
                "this build has no browser client: run `cargo xtask dist` and build again, or pass --assets-dir"
            ),
            easel::config::Pages::Embedded => {}
        }
        easel::run(config, listener, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Registers for Ctrl-C and SIGTERM at once (so a signal that arrives right after start-up is
/// still graceful) and returns a future that completes on either. Takes SIGHUP over from its
/// default too (which ends the process): a reload asked for while the server starts must not
/// stop it (the certificate's watcher, if any, does the reloading).
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    // Once tokio handles a signal, it does for the life of the process.
    drop(signal(SignalKind::hangup()).context("listening for SIGHUP")?);
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
