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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let level: tracing::Level = config.log_level.parse().context("log level")?;
    tracing_subscriber::fmt().with_max_level(level).with_target(false).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        println!("Easel listening on http://{address}");
        if let Some(dir) = &config.assets_dir {
            tracing::info!(assets = %dir.display(), tick_rate = config.tick_rate, "serving");
        }
        easel::run(config, listener, shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
