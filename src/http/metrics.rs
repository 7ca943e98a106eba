//! `GET /metrics`: the server's counters and gauges in the Prometheus text format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::state::AppState;
use crate::metrics::Text;

pub async fn scrape(State(shared): State<AppState>) -> impl IntoResponse {
    let mut out = Text::default();
    out.gauge(
        "missive_connections",
        "Open connections (logged in or not yet).",
        shared.connections.open_count() as u64,
    );
    let sessions = shared.router.sessions();
    out.gauge(
        "missive_sessions",
        "Logged-in sessions registered with the router.",
        sessions.len() as u64,
    );
    out.gauge(
        "missive_outbound_queued_frames",
        "Frames queued for sessions and not yet taken by them, all sessions together.",
        sessions.iter().map(|s| s.queued() as u64).sum(),
    );
    drop(sessions);
    out.gauge(
        "missive_login_failure_addresses",
        "Source addresses (IPv6: /64s) with failed logins not yet forgotten (their budget not refilled).",
        shared.login_failures.tracked() as u64,
    );
    out.gauge(
        "missive_store_queue_depth",
        "Changes waiting for the store's writer.",
        shared.store.core().queued_changes() as u64,
    );
    out.gauge(
        "missive_draining",
        "1 while the server drains (logins refused, sessions moved away).",
        u64::from(shared.drain.is_active()),
    );
    shared.metrics.render(&mut out);
    if let Some(cluster) = &shared.cluster {
        let (owned, takeovers, losses, live) = cluster.counts();
        out.gauge(
            "missive_cluster_partitions_owned",
            "Partitions this node owns now (its lease renewed within the TTL minus the margin).",
            owned as u64,
        );
        out.gauge(
            "missive_cluster_nodes_live",
            "Cluster nodes whose key changed within a lease TTL, this one included.",
            live as u64,
        );
        out.counter(
            "missive_cluster_takeovers_total",
            "Partitions this node took (free, released or expired leases).",
            takeovers,
        );
        out.counter(
            "missive_cluster_lease_losses_total",
            "Partitions this node lost without releasing them: a renewal refused or not answered before the deadline.",
            losses,
        );
        out.gauge(
            "missive_cluster_log_seq",
            "The partition log's position this node's data directory holds (one-partition cluster).",
            cluster.log_seq(),
        );
        out.gauge(
            "missive_cluster_lag_records",
            "Log records this node's directory is behind the furthest live node's (a standby's lag).",
            cluster.lag(),
        );
        out.counter(
            "missive_cluster_snapshots_total",
            "Snapshots this node uploaded to NATS and trimmed the partition's log behind.",
            cluster.snapshot_stats().taken(),
        );
    }
    let words = &shared.words;
    if words.enabled() {
        let list = words.list();
        out.gauge(
            "missive_word_filter_entries",
            "Entries of the word filter's list in force (reject and mask lists together).",
            (list.rejects + list.masks) as u64,
        );
    }
    if let Some(hook) = &shared.hook {
        out.header(
            "missive_send_hook_answers_total",
            "counter",
            "Messages the before-send hook was asked about, by outcome (failed: no answer in time, refused, not 2xx, or not an answer).",
        );
        for (result, n) in [
            ("allow", hook.allowed.get()),
            ("reject", hook.rejected.get()),
            ("replace", hook.replaced.get()),
            ("failed", hook.failed.get()),
        ] {
            out.sample("missive_send_hook_answers_total", &[("result", result)], n);
        }
        out.counter(
            "missive_send_hook_requests_total",
            "HTTP requests made to the before-send hook (each about up to send_hook_batch_max messages).",
            hook.requests(),
        );
        out.gauge(
            "missive_send_hook_senders",
            "Senders with a message at the before-send hook or waiting for their turn (send_hook_max_in_flight_per_user).",
            hook.senders_asking() as u64,
        );
        out.gauge(
            "missive_send_hook_in_flight",
            "Before-send hook requests in flight now (at most send_hook_max_in_flight).",
            hook.in_flight(shared.config.send_hook_max_in_flight) as u64,
        );
    }
    out.counter(
        "missive_events_sent_total",
        "Event webhook requests the app's backend answered with a 2xx.",
        shared.events.sent.get(),
    );
    out.counter(
        "missive_events_failed_total",
        "Event webhook requests that failed (tried again after a backoff).",
        shared.events.failed.get(),
    );
    out.counter(
        "missive_events_dropped_total",
        "Events dropped undelivered after event_webhook_max_age_secs.",
        shared.events.dropped.get(),
    );
    out.counter(
        "missive_word_filter_rejected_total",
        "Messages the word filter refused (CONTENT_REJECTED).",
        words.rejected.get(),
    );
    out.counter(
        "missive_word_filter_masked_total",
        "Sends whose content the word filter masked (a resend of a message stored before included).",
        words.masked.get(),
    );
    out.counter(
        "missive_word_filter_reloads_total",
        "Times a word list was loaded (at start, on a change of its file, on SIGHUP).",
        words.reloads.get(),
    );
    out.counter(
        "missive_word_filter_reload_failures_total",
        "Times the word list file could not be read or parsed; the list in force stayed.",
        words.reload_failures.get(),
    );
    shared.receipts.render(&mut out);
    let store = &shared.store;
    store.core().commit_latency().render(
        &mut out,
        "missive_store_commit_seconds",
        "Time to write one group commit's batch to RocksDB, including the fsync in sync durability.",
    );
    out.counter(
        "missive_store_keys_written_total",
        "Keys written or deleted by committed store changes.",
        store.core().keys_written(),
    );
    out.counter(
        "missive_store_wal_syncs_total",
        "Write-ahead-log fsyncs.",
        store.core().wal_syncs(),
    );
    let push = shared.push.snapshot();
    out.counter(
        "missive_push_sent_total",
        "Offline-push notifications the webhook answered with a 2xx.",
        push.sent,
    );
    out.counter(
        "missive_push_failed_total",
        "Webhook requests that failed (retried with backoff, or dropped).",
        push.failed,
    );
    out.counter(
        "missive_push_dropped_total",
        "Notifications dropped after push_max_attempts tries or push_max_age_secs.",
        push.dropped,
    );
    out.counter(
        "missive_push_obsolete_total",
        "Notifications not sent: the message was recalled, deleted or read first.",
        push.obsolete,
    );
    out.counter(
        "missive_push_unacked_total",
        "Notifications queued for a user found online whose push no foreground device acknowledged within push_unacked_ms (or whose last foreground connection closed first).",
        push.unacked,
    );
    out.counter(
        "missive_push_unwatched_total",
        "Pushes to online users not watched for an ack because the table was full (64 per user, 262,144 in all): not announced if unacknowledged.",
        shared.router.unacked_refused(),
    );
    out.gauge(
        "missive_push_watched",
        "Pushes to online users now waiting for a foreground device's ack (push_unacked_ms).",
        shared.router.unacked_len() as u64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.0,
    )
}
