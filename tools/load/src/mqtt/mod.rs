//! `missive-load mqtt <scenario>`: the peer mode. The workloads of `chat`, `fanout`, `offline`
//! and `connect`, with the same options, the same open-loop pacing and the same summary keys,
//! against an MQTT broker (mosquitto in `tools/load/suite.sh`), so that one run of the suite
//! can put Missive and its peer side by side. Clients are MQTT 3.1.1 over plain TCP with
//! TCP_NODELAY on, through the `rumqttc` crate; messages are QoS 1 ("acked" is the PUBACK).
//! Every payload carries the message's number, scheduled time, sender and recipient, and the
//! receivers check that every acknowledged message arrives exactly once, at the right client:
//! the exit code is 1 if anything was lost, duplicated or misrouted, as for the Missive
//! scenarios.

mod chat;
mod common;
mod conn;
mod connect;
mod fanout;
mod offline;

use anyhow::Result;
use clap::Subcommand;

use crate::stats::Report;
use common::Broker;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Users (each subscribed to its own topic) publish one-to-one messages at an aggregate
    /// open-loop rate.
    Chat(chat::Args),
    /// One publisher, M subscribers of its topic.
    Fanout(fanout::Args),
    /// Queue messages for a persistent session while it is offline, then time its reconnect
    /// and catch-up.
    Offline(offline::Args),
    /// Ramp up many idle connections and hold them (PINGREQ at the keep-alive interval).
    Connect(connect::Args),
}

impl Args {
    fn broker(&self) -> &Broker {
        match &self.scenario {
            Scenario::Chat(a) => &a.broker,
            Scenario::Fanout(a) => &a.broker,
            Scenario::Offline(a) => &a.broker,
            Scenario::Connect(a) => &a.broker,
        }
    }

    /// The harness's runtime threads (`--threads`).
    pub fn threads(&self) -> usize {
        self.broker().threads()
    }
}

/// Runs the scenario and prints its report; `Ok(false)` when something was lost, duplicated
/// or failed.
pub async fn run(args: &Args) -> Result<bool> {
    let report: Report = match &args.scenario {
        Scenario::Chat(a) => chat::run(a).await?,
        Scenario::Fanout(a) => fanout::run(a).await?,
        Scenario::Offline(a) => offline::run(a).await?,
        Scenario::Connect(a) => connect::run(a).await?,
    };
    report.print(args.broker().json);
    Ok(report.failures.is_empty())
}
