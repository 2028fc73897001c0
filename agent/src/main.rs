//! `gimbal`: parse the command line, set up logging, load config, run.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gimbal::{config::Config, service::log_line::EscapedStderr};

/// eBPF host agent: syscall latency, TCP retransmits and process exits as Prometheus metrics.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the probes and serve /metrics and /healthz until SIGINT or SIGTERM.
    Run {
        /// TOML config; without it the embedded defaults apply (see `gimbal default-config`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding [agent] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Check a config file and report every error with its line and column.
    CheckConfig { file: PathBuf },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() -> ExitCode {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GIMBAL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        // One record per line whatever outside text the fields hold; no colour codes in
        // the journal or a log file.
        .with_writer(EscapedStderr {
            keep_escapes: terminal,
        })
        .with_ansi(terminal)
        .init();
    match Cli::parse().command {
        Command::Run {
            config: config_path,
            listen,
        } => {
            let config = match &config_path {
                Some(path) => match gimbal::check::config_file(path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::embedded(),
            };
            let fds = gimbal::service::fd_limit::raise();
            tracing::debug!(open_files = fds, "open-file limit");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(gimbal::run::run(config, config_path, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match gimbal::check::config_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::DefaultConfig => {
            print!("{}", gimbal::config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
    }
}
