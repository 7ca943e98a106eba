//! `missive`: the Missive protocol test CLI.
//!
//! Network commands log in with a token (given, or minted from `--user` and the server's
//! secret), make one request and print the reply; `watch` stays connected through the reliable
//! `missive_client::Client`. `upload` and `download` move media over HTTP on the same address
//! (`media`, over the small client of `http1`); `backup` asks the server's API for a backup
//! (`backup`, over the same client). `decode`, `encode` and `raw` work on frames as
//! bytes.

#![forbid(unsafe_code)]

mod args;
mod backup;
mod conform;
mod decoded;
mod http1;
mod media;
mod net;
mod output;
mod proxy;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Cmd};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let watching = matches!(
        cli.command,
        Cmd::Watch { .. } | Cmd::Receipts { watch: true, .. }
    );
    if cli.global.device.is_none() && watching {
        cli.global.device = Some("cli-watch".into());
    }
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e, json);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Cmd::Decode { hex, file } => wire::decode(g, &hex, file.as_deref()),
        Cmd::Encode {
            command,
            request_id,
            body,
            flags,
        } => wire::encode(g, &command, request_id, &body, flags),
        Cmd::Raw { hex, wait } => wire::raw(g, &hex, wait).await,
        Cmd::Proxy(args) => proxy::run::proxy(g, args).await,
        Cmd::Conform(args) => conform::conform(g, args, net::secret(g)?).await,
        Cmd::Token => net::token(g),
        Cmd::Send { http: true, .. } => net::send_http(g, cli.command).await,
        Cmd::Upload {
            file,
            chunk,
            content_type,
            retries,
        } => media::upload(g, &file, chunk, content_type, retries).await,
        Cmd::Download {
            media_id,
            output,
            range,
            thumbnail,
        } => media::download(g, &media_id, output, range, thumbnail).await,
        Cmd::Backup {
            ref api,
            ref key,
            list,
            ref delete,
            wait,
        } => {
            let action = match (list, delete) {
                (true, _) => backup::Action::List,
                (false, Some(name)) => backup::Action::Delete(name.clone()),
                (false, None) => backup::Action::Create,
            };
            backup::run(g, api, key.as_deref(), action, wait).await
        }
        Cmd::Typing { target, stop, app } => net::typing(g, &target, stop, app).await,
        Cmd::Watch {
            since,
            count,
            for_secs,
        } => net::watch(g, since, count, for_secs).await,
        Cmd::Receipts {
            watch: true,
            count,
            for_secs,
            ..
        } => net::watch_receipts(g, count, for_secs).await,
        other => net::one_shot(g, other).await,
    }
}
