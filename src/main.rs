//! `missived`: reads the configuration, opens the store, serves until SIGINT or SIGTERM;
//! SIGUSR1 starts a drain (see `missive::drain`); SIGHUP reloads the word filter's list.

use anyhow::Context;
use clap::Parser;
use missive::config::{Args, Config};
use missive::Server;
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc instead of glibc's malloc: the writer thread allocates what the committer and the
/// connection tasks free, which glibc serves slowly (arena locks, consolidation); see
/// BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_words {
        return match missive::moderation::load(path) {
            Ok(list) => {
                println!(
                    "{}: {} entries to reject, {} to mask",
                    path.display(),
                    list.rejects,
                    list.masks
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("missived: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("missived: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if args.print_config {
        return match config.to_toml_redacted() {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("missived: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(backup) = &args.restore {
        return restore(backup, &config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("missived: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on; no backtrace.
            eprintln!("missived: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `missived --restore BACKUP --data-dir DIR`: the backup copied into DIR and checked, or why
/// not (DIR is then left as it was).
fn restore(backup: &std::path::Path, config: &Config) -> std::process::ExitCode {
    let data = config.data_dir.display();
    match missive::service::backup::restore(backup, config) {
        Ok(r) => {
            let m = &r.manifest;
            println!(
                "missived: restored {} (written {} by missived {}) into {data}: {} files, {} \
                 bytes; the store opens at schema {}, with the {} media files and {} uploads \
                 in progress its records name in place.",
                backup.display(),
                m.created_at,
                m.missived_version,
                r.copied.files,
                r.copied.bytes,
                missive::store::SCHEMA_VERSION,
                r.media_files,
                r.uploads,
            );
            if !m.secret_file {
                println!(
                    "missived: the backup holds no token secret file (its server's `secret` \
                     was configured): give the restored server the same `secret`, or its users' \
                     tokens are refused."
                );
            }
            println!("missived: start the server on it with --data-dir {data}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("missived: cannot restore: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .with_context(|| format!("log: bad filter {:?}", config.log))?,
        )
        .init();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // SIGINT and SIGTERM while starting (a cluster's standby waits there until it owns the
    // partition) stop it cleanly: it leaves the cluster and exits with success.
    let stop = tokio_util::sync::CancellationToken::new();
    let starting = Server::start_until(config, stop.clone());
    tokio::pin!(starting);
    let started = loop {
        tokio::select! {
            r = &mut starting => break r,
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT while starting: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM while starting: stopping"),
            // A standby serves nobody: nothing to drain (and nothing left pending for when it
            // serves). SIGHUP likewise: the word filter is read when it starts serving.
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1 while starting (a standby): nothing to drain");
                continue;
            }
            _ = hup.recv() => continue,
        }
        stop.cancel();
    };
    let server = match started {
        // Asked to stop while it was opening: it shuts down at once.
        Ok(server) if stop.is_cancelled() => {
            server.shutdown().await;
            return Ok(());
        }
        Ok(server) => server,
        Err(missive::server::ServerError::Stopped) => {
            tracing::info!("missived stopped before serving");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut failed = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = server.stopping() => {
                if server.stop_requested() {
                    tracing::info!("stopping as asked (a drain of a one-partition cluster's node)");
                } else {
                    tracing::error!("stopping after a failure");
                    failed = true;
                }
            }
            _ = hup.recv() => {
                match server.reload_words() {
                    Ok(_) => tracing::info!("SIGHUP: word filter reloaded"),
                    Err(e) => tracing::error!("SIGHUP: word filter not reloaded, the list in force stays: {e}"),
                }
                continue;
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: draining");
                server.drain();
                continue;
            }
        }
        break;
    }
    server.shutdown().await;
    // A stop nobody asked for (a store failure, a cluster node's lost lease) ends with a
    // failure status, so that a supervisor starts the server again.
    if failed {
        anyhow::bail!("stopped after a failure (the log above says which)");
    }
    Ok(())
}
