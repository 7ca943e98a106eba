//! Listeners, the accept loop, the heartbeat sweep, shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use missive_protocol::pb::KickReason;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::context::Shared;
use crate::net::listen::BindError;
use crate::router::Router;
use crate::store::{Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("data directory {path}: {error}")]
    DataDir { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the poller of idle connections: {error}")]
    Parker { error: io::Error },
    #[error("word_filter: {0}")]
    Words(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("stopped before serving, as asked")]
    Stopped,
}

/// Starts servers.
pub struct Server;

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    http_addr: Option<SocketAddr>,
    tasks: TaskTracker,
    push: Arc<crate::offline_push::Counters>,
    /// When the handle goes (shut down, or dropped without): closes every session left and ends
    /// the parker's thread.
    _parker: StopParker,
    /// This node's membership of its cluster, left last at shutdown.
    membership: Option<Membership>,
}

/// A cluster node's membership loop (`Cluster::run`), stopped on its own token: at shutdown
/// after the server's writes, and when dropped.
struct Membership {
    leave: tokio_util::sync::DropGuard,
    run: tokio::task::JoinHandle<()>,
}

impl Membership {
    fn start(cluster: &Arc<crate::cluster::Cluster>) -> Membership {
        let token = CancellationToken::new();
        let run = tokio::spawn(cluster.clone().run(token.clone()));
        Membership {
            leave: token.drop_guard(),
            run,
        }
    }

    /// Releases this node's leases and deletes its key (waiting at most 5 s for it).
    async fn leave(self) {
        drop(self.leave);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.run).await;
    }
}

/// Parked sessions have no task for the runtime to drop: without this, dropping a server that
/// was not shut down would leave them (and their sockets) waiting for a wake that never comes.
struct StopParker(Arc<Shared>);

impl Drop for StopParker {
    fn drop(&mut self) {
        self.0.router.close_all(shutdown_kick);
        self.0.parker.stop();
    }
}

impl Server {
    /// Opens the store, binds every listener and starts accepting.
    pub async fn start(config: Config) -> Result<ServerHandle, ServerError> {
        Server::start_until(config, CancellationToken::new()).await
    }

    /// [`Server::start`], given up when `stop` is cancelled before the server serves (a
    /// cluster's standby waits inside it until it owns the partition): the node then leaves
    /// the cluster (its key deleted) and this returns [`ServerError::Stopped`]. Once it has
    /// returned the handle, cancelling `stop` begins the shutdown as a failure would
    /// ([`ServerHandle::stopping`]).
    pub async fn start_until(
        config: Config,
        stop: CancellationToken,
    ) -> Result<ServerHandle, ServerError> {
        config.validate()?;
        let data_err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ServerError::DataDir { path, error }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(data_err(&config.data_dir))?;
        let secret = load_or_create_secret(&config)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::net::tls::acceptor(cert, key)?),
            _ => None,
        };
        let shutdown = stop.child_token();
        let tasks = TaskTracker::new();
        let db_dir = config.data_dir.join("db");
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push(crate::net::listen::bind(addr).await?);
        }
        let mut bound = Vec::new();
        for listener in &listeners {
            bound.push(listener.local_addr().map_err(|error| BindError {
                addr: "?".into(),
                error,
                hint: String::new(),
            })?);
        }
        // A cluster node joins before it serves; in a one-partition cluster it then waits as a
        // standby until it owns the partition, forwarding clients to the owner meanwhile
        // (docs/CLUSTER.md sections 6 and 10).
        let mut membership = None;
        let mut held = Vec::new();
        let (cluster, replicator) = if config.clustered() {
            let cluster = join_cluster(&config, &secret, &bound).await?;
            // The membership (renewals, and the release at the end) runs until the server has
            // finished its writes (`ServerHandle::shutdown`), not just until the shutdown
            // begins: a lease released first would refuse the groups still being committed.
            let member = Membership::start(&cluster);
            let replicator = if config.cluster_partitions == 1 {
                let waited = standby(&cluster, &config, &secret, &db_dir, listeners, &shutdown);
                let serving = match waited.await {
                    Ok(Some(serving)) => serving,
                    // Asked to stop while a standby, or it cannot go on: leave the cluster
                    // (release, delete this node's key) before returning.
                    other => {
                        shutdown.cancel();
                        tasks.close();
                        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
                        member.leave().await;
                        return Err(other.err().unwrap_or(ServerError::Stopped));
                    }
                };
                listeners = serving.listeners;
                held = serving.held;
                Some(Arc::new(serving.replicator))
            } else {
                tracing::warn!(
                    "cluster mode with more than one partition is being built (docs/CLUSTER.md \
                     section 10): this node joins the partition leases but still stores its own \
                     clients' messages locally"
                );
                None
            };
            membership = Some(member);
            (Some(cluster), replicator)
        } else {
            (None, None)
        };
        let http = match config.http_listen.as_str() {
            "" => None,
            addr => Some(crate::http::bind(addr).await?),
        };
        let durability = config.durability;
        let threshold = config.fanout_threshold;
        let store =
            tokio::task::spawn_blocking(move || Store::open_with(&db_dir, durability, threshold))
                .await
                .map_err(|e| StoreError::Corrupt(format!("store open panicked: {e}")))??;
        if let Some(replicator) = replicator {
            store.set_replicator(replicator);
        }
        let router = Arc::new(Router::new(if config.push_webhook_url.is_empty() {
            0
        } else {
            config.push_unacked_ms
        }));
        store.set_outbox(router.clone());
        // Events are on before the first change too.
        let events_wake = (!config.event_webhook_url.is_empty()).then(|| {
            let wake = Arc::new(tokio::sync::Notify::new());
            let kinds = config
                .event_webhook_events
                .iter()
                .filter_map(|n| crate::store::EventKind::from_name(n));
            store.enable_events(crate::store::EventKinds::of(kinds), wake.clone());
            wake
        });
        // Offline push is on before the first change, so no send misses it.
        let push_wake = (!config.push_webhook_url.is_empty()).then(|| {
            let wake = Arc::new(tokio::sync::Notify::new());
            store.enable_push(wake.clone());
            wake
        });
        let receipts = crate::receipts::Receipts::new(config.receipt_coalesce_ms);
        let words = crate::moderation::Words::open(
            (!config.word_filter.is_empty()).then(|| config.word_filter.clone().into()),
            config.word_filter_types.clone(),
        )
        .map_err(ServerError::Words)?;
        let hook = crate::moderation::hook::Hook::new(&config);
        let shared = Arc::new(Shared {
            cluster,
            store: Arc::new(store),
            router,
            secret,
            shutdown,
            connections: crate::limits::Connections::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            logins: parking_lot::Mutex::new(crate::limits::Bucket::new(
                config.logins_per_sec,
                config.logins_per_sec,
            )),
            login_failures: crate::limits::LoginFailures::new(
                config.login_failures_per_sec,
                config.login_failures_burst,
            ),
            forwarders: Default::default(),
            config,
            tls,
            metrics: Default::default(),
            drain: Default::default(),
            stop_requested: Default::default(),
            bound: bound.clone(),
            push: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
            tasks: tasks.clone(),
            parker: crate::net::parker::Parker::start()
                .map_err(|error| ServerError::Parker { error })?,
            heavy_reads: Arc::new(tokio::sync::Semaphore::new(
                crate::service::run::heavy_read_slots(),
            )),
            receipts,
            words,
            hook,
            events: Arc::default(),
        });
        let addrs = bound;
        // The clients a standby held while no node served: first in line.
        if !held.is_empty() {
            tracing::info!(
                clients = held.len(),
                "serving the clients held during the takeover"
            );
        }
        for (stream, peer) in held {
            accept_one(&shared, &tasks, stream, peer);
        }
        for listener in listeners {
            tasks.spawn(accept_loop(shared.clone(), listener, tasks.clone()));
        }
        let http_addr = match http {
            Some(listener) => Some(crate::http::serve(shared.clone(), listener, &tasks)?),
            None => None,
        };
        let push = shared.push.clone();
        if let Some(wake) = push_wake {
            let worker = crate::offline_push::worker::Worker::new(
                &shared.config,
                shared.store.clone(),
                wake.clone(),
                shared.shutdown.clone(),
                push.clone(),
            );
            if let Some(worker) = worker {
                if shared.config.push_unacked_ms > 0 {
                    use crate::offline_push::unacked;
                    tasks.spawn(unacked::run(unacked::Announcer {
                        router: shared.router.clone(),
                        store: shared.store.clone(),
                        counters: push.clone(),
                        shutdown: shared.shutdown.clone(),
                        period: unacked::period(shared.config.push_unacked_ms),
                        wake,
                        rewind: worker.rewinder(),
                    }));
                }
                tasks.spawn(worker.run());
            }
        }
        if let Some(wake) = events_wake {
            let worker = crate::events::Worker::new(
                &shared.config,
                shared.store.clone(),
                wake,
                shared.shutdown.clone(),
                shared.events.clone(),
            );
            if let Some(worker) = worker {
                tasks.spawn(worker.run());
            }
        }
        if let (Some(cluster), 1) = (&shared.cluster, shared.config.cluster_partitions) {
            tasks.spawn(watch_lease(cluster.clone(), shared.shutdown.clone()));
            // Snapshots into NATS, and the log trimmed behind them (docs/CLUSTER.md section 4).
            tasks.spawn(crate::cluster::snapshot::run(
                cluster.clone(),
                shared.store.clone(),
                shared.config.data_dir.clone(),
                shared.config.cluster_snapshot_records,
                shared.shutdown.clone(),
            ));
        }
        tasks.spawn(heartbeat_sweep(shared.clone()));
        tasks.spawn(receipts_flush(shared.clone()));
        tasks.spawn(crate::service::media::collector(shared.clone()));
        if shared.words.enabled() && shared.config.word_filter_poll_ms > 0 {
            tasks.spawn(watch_words(shared.clone()));
        }
        // At shutdown (asked for, or after a store failure) every session is told to go.
        let s = shared.clone();
        tasks.spawn(async move {
            s.shutdown.cancelled().await;
            s.router.close_all(shutdown_kick);
        });
        tracing::info!(?addrs, ?http_addr, "missived listening");
        Ok(ServerHandle {
            _parker: StopParker(shared.clone()),
            shared,
            addrs,
            http_addr,
            tasks,
            push,
            membership,
        })
    }
}

impl ServerHandle {
    /// The bound addresses, in the order of `Config::listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound address of the HTTP API (`http_listen`), if it is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Starts draining with the configured rate and redirect (what SIGUSR1 does).
    pub fn drain(&self) {
        let plan = crate::drain::Plan::from_config(&self.shared.config);
        crate::service::drain::start(&self.shared, plan);
    }

    /// Reads the word filter's list file again (what SIGHUP does): whether a new list is in
    /// force. A file that cannot be read or parsed leaves the list in force and is the error.
    pub fn reload_words(&self) -> Result<bool, String> {
        self.shared.words.reload(true)
    }

    /// The server's counters.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// The store, for tests that check what was written.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// What the offline-push worker did (all zero when offline push is off).
    pub fn push_stats(&self) -> crate::offline_push::Stats {
        self.push.snapshot()
    }

    pub fn online_sessions(&self) -> usize {
        self.shared.router.online_count()
    }

    /// Fault injection for tests: what the server does if the parker thread's epoll_wait fails
    /// (only a bug can cause it): every session parked there is served by a task again, and
    /// later ones park with tokio.
    #[cfg(feature = "test-hooks")]
    pub fn break_parker(&self) {
        self.shared.parker.fail();
        self.shared.parker.stop();
    }

    /// Whether the shutdown under way was asked for from inside (a drain of a one-partition
    /// cluster's node), not caused by a failure.
    pub fn stop_requested(&self) -> bool {
        self.shared
            .stop_requested
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves when the server begins shutting down (for example after a store failure).
    pub async fn stopping(&self) {
        self.shared.shutdown.cancelled().await
    }

    /// Stops accepting, kicks every client with a reconnect hint, lets in-flight requests
    /// finish (up to 10 s), flushes and closes the store.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions did not finish within 10 s; closing the store anyway");
        }
        let store = self.shared.store.clone();
        drop(self.shared);
        let flushed = tokio::task::spawn_blocking(move || store.core().flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::error!("flush at shutdown failed: {e}");
        }
        // Every write is done: the partitions can go to another node now.
        if let Some(membership) = self.membership {
            membership.leave().await;
        }
        tracing::info!("missived stopped");
    }
}

/// Stops the server as soon as this node no longer owns the one partition of its cluster: it
/// must not serve (and cannot acknowledge: its appends are refused) once another node may.
async fn watch_lease(cluster: Arc<crate::cluster::Cluster>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !cluster.owns(crate::cluster::primary::PARTITION) {
            tracing::error!("this node no longer owns the partition: stopping");
            shutdown.cancel();
            return;
        }
    }
}

/// A one-partition cluster's standby: forwards the clients that connect to `listeners` to the
/// owner while it follows the log, until this node owns the partition. Then the forwarded
/// connections are closed (the owner they went to has gone) and the listeners are given back
/// to be served on, with the replicator for the store. `None`: `shutdown` came first.
async fn standby(
    cluster: &Arc<crate::cluster::Cluster>,
    config: &Config,
    secret: &[u8],
    db_dir: &Path,
    listeners: Vec<TcpListener>,
    shutdown: &CancellationToken,
) -> Result<Option<Standby>, ServerError> {
    use crate::cluster::{forward, primary};
    let forwarding = shutdown.child_token();
    // Dropped with this future too (a start given up): the forwarding tasks end with it.
    let _forwarding_ends = forwarding.clone().drop_guard();
    let limits =
        crate::limits::Connections::new(config.max_connections, config.max_connections_per_ip);
    let secret: Arc<[u8]> = secret.into();
    let forwarders: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(forward::serve(
                l,
                cluster.clone(),
                primary::PARTITION,
                secret.clone(),
                limits.clone(),
                forwarding.clone(),
            ))
        })
        .collect();
    let owner = primary::become_owner(cluster, db_dir, shutdown).await;
    forwarding.cancel();
    let mut listeners = Vec::new();
    let mut held = Vec::new();
    for f in forwarders {
        let (listener, waiting) = f.await.map_err(|e| {
            crate::cluster::ClusterError(format!("the forwarding task failed: {e}"))
        })?;
        listeners.push(listener);
        held.extend(waiting);
    }
    Ok(owner?.map(|r| Standby {
        replicator: r,
        listeners,
        held,
    }))
}

/// What a standby hands on when it serves: the replicator for its store, its listeners, and
/// the clients it held for want of an owner (served first).
struct Standby {
    replicator: crate::cluster::replicator::LogReplicator,
    listeners: Vec<TcpListener>,
    held: crate::cluster::forward::Held,
}

/// Joins the cluster named by `config.cluster` (docs/CLUSTER.md); `bound` are this node's client
/// listeners, for the other nodes to forward clients to.
async fn join_cluster(
    config: &Config,
    secret: &[u8],
    bound: &[SocketAddr],
) -> Result<Arc<crate::cluster::Cluster>, ServerError> {
    let ms = std::time::Duration::from_millis;
    let addrs = if config.cluster_advertise.is_empty() {
        config.entry_addresses.clone()
    } else {
        config.cluster_advertise.clone()
    };
    let settings = crate::cluster::Settings {
        urls: config.cluster.clone(),
        node_id: config.node_id.clone(),
        partitions: config.cluster_partitions,
        replicas: config.cluster_replicas as usize,
        timing: crate::cluster::Timing {
            ttl: ms(config.cluster_lease_ttl_ms),
            renew: ms(config.cluster_lease_renew_ms),
            margin: ms(config.cluster_lease_margin_ms),
        },
        forward: crate::cluster::forward::forward_address(bound, &addrs),
        addrs,
        http: config.http_listen.clone(),
        secret: secret.to_vec(),
    };
    Ok(crate::cluster::Cluster::join(settings).await?)
}

fn load_or_create_secret(config: &Config) -> Result<Vec<u8>, ServerError> {
    if let Some(s) = &config.secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("secret");
    let err = |error| ServerError::DataDir {
        path: path.clone(),
        error,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => return Ok(s.trim().as_bytes().to_vec()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    f.write_all(secret.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "generated a token secret");
    Ok(secret.into_bytes())
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => accept_one(&shared, &tasks, stream, peer),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// An accepted connection: refused at once if its address used up its failed logins, else
/// served within the connection limits.
fn accept_one(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let now = tokio::time::Instant::now();
    // A cluster node forwarding its clients: they are checked by their own addresses once its
    // preamble is read (`limits::Forwarders`).
    if shared.cluster.is_some() && shared.forwarders.contains(peer.ip(), now) {
        match shared.connections.admit_deferred() {
            Some(permit) => {
                shared.metrics.connections_accepted.inc();
                tasks.spawn(crate::session::run(shared.clone(), stream, peer, permit));
            }
            None => refuse_busy(shared, tasks, stream),
        }
        return;
    }
    if let Err(wait) = shared.login_failures.check(peer.ip(), now) {
        shared.metrics.login_failure_refusals.inc();
        shared
            .metrics
            .error(missive_protocol::ErrorCode::ServerBusy);
        crate::session::refuse_at_once(stream, wait.max(1000));
        return;
    }
    accepted_within_limits(shared, tasks, stream, peer);
}

/// Serves an accepted connection, or refuses it (SERVER_BUSY) at the connection limits.
fn accepted_within_limits(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    match shared.connections.admit(peer.ip()) {
        Some(permit) => {
            shared.metrics.connections_accepted.inc();
            tasks.spawn(crate::session::run(shared.clone(), stream, peer, permit));
        }
        None => refuse_busy(shared, tasks, stream),
    }
}

/// Refuses a connection over the connection limits (SERVER_BUSY).
fn refuse_busy(shared: &Arc<Shared>, tasks: &TaskTracker, stream: tokio::net::TcpStream) {
    shared.metrics.connections_refused.inc();
    shared
        .metrics
        .error(missive_protocol::ErrorCode::ServerBusy);
    tasks.spawn(crate::session::refuse_busy(stream));
}

/// The heartbeat timeout: a connection silent for more than two of its heartbeat intervals
/// (its own, negotiated at LOGIN or by HEARTBEAT, or the server's default) is closed. One sweep
/// for all connections, so an idle connection has no timer of its own.
struct Sweep {
    /// The server's default interval, for sessions that set none.
    default_secs: u32,
    limit_ms: i64,
}

impl Sweep {
    fn new(heartbeat_secs: u32) -> Sweep {
        Sweep {
            default_secs: heartbeat_secs,
            limit_ms: 2 * i64::from(heartbeat_secs) * 1000,
        }
    }

    /// How often the sweep runs: every eighth of the default limit, at most every 5 s (7.5 s
    /// would be the eighth of the default 60 s), at least every 100 ms. A dead connection with
    /// the default interval is closed within an eighth of the limit after it; one with a
    /// negotiated interval within the same period (so a shorter interval than the default is
    /// enforced less tightly, and the sweep costs what it always did).
    fn period(&self) -> Duration {
        Duration::from_millis((self.limit_ms as u64 / 8).clamp(100, 5000))
    }

    fn interval(&self) -> tokio::time::Interval {
        let mut tick = tokio::time::interval(self.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// Closes every session of `router` silent for more than twice its interval at `now_ms`.
    fn once(&self, router: &Router, now_ms: i64) {
        for s in router.silent(now_ms, self.default_secs) {
            tracing::debug!(session = %s.id, user = %s.user, "heartbeat timeout");
            s.close(None);
        }
    }
}

/// Runs the heartbeat sweep ([`Sweep`]) until shutdown, and prunes the table of failed logins.
async fn heartbeat_sweep(shared: Arc<Shared>) {
    let sweep = Sweep::new(shared.config.heartbeat_secs);
    let mut tick = sweep.interval();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        sweep.once(&shared.router, crate::clock::now_ms());
        // Addresses whose failed logins are forgotten again (their buckets refilled).
        shared.login_failures.prune(tokio::time::Instant::now());
    }
}

/// Sends the read receipts held back by `receipts` when their coalescing window ends, until
/// shutdown (PROTOCOL.md 25). Sleeps until the next window's end, or while none is open until
/// one opens: an idle server is not woken.
async fn receipts_flush(shared: Arc<Shared>) {
    use tokio::time::Instant as Now;
    let receipts = &shared.receipts;
    loop {
        let due = receipts.next_end();
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = receipts.opened(), if due.is_none() => {}
            _ = tokio::time::sleep_until(due.unwrap_or_else(Now::now)), if due.is_some() => {
                receipts.flush(&shared.router, Now::now());
            }
        }
    }
}

/// Looks at the word filter's list file every `word_filter_poll_ms` and reloads it when it
/// changed; a file that does not parse is logged once per change and the list in force stays.
/// The file is read on the blocking pool (a large list takes a while to compile).
async fn watch_words(shared: Arc<Shared>) {
    let period = Duration::from_millis(shared.config.word_filter_poll_ms);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.words.reload(false)).await {
            Ok(Err(e)) => tracing::error!("word filter not reloaded, the list in force stays: {e}"),
            Ok(Ok(_)) => {}
            Err(e) => tracing::error!("word filter reload failed: {e}"),
        }
    }
}

/// The kick sent to every client at shutdown: reconnect after 1 to 3 s, spread out.
pub fn shutdown_kick() -> missive_protocol::pb::Kick {
    let mut k = crate::router::kick(KickReason::Shutdown, "server shutting down");
    k.reconnect_after_ms = rand::random_range(1000..3000);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep run as the server runs it, in virtual time: a connection heard from every
    /// heartbeat interval stays; one silent since `t0` is closed after two intervals, within an
    /// eighth of that. A connection that negotiated 240 s and heartbeats every 240 s stays
    /// while the default one is closed at about 60 s, and is closed itself after 480 s of
    /// silence.
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_two_heartbeats_and_a_live_one_stays() {
        let heartbeat_secs = 30;
        let router = Router::default();
        let base_ms = 1_000_000;
        let silent = router.register("alice", "phone", 16, 10, base_ms);
        let live = router.register("bob", "phone", 16, 10, base_ms);
        let slow = router.register("carol", "phone", 16, 10, base_ms);
        slow.set_heartbeat_secs(240);
        let slow_silent = router.register("dave", "phone", 16, 10, base_ms);
        slow_silent.set_heartbeat_secs(240);
        let sweep = Sweep::new(heartbeat_secs);
        assert_eq!(sweep.period(), Duration::from_secs(5));
        let mut tick = sweep.interval();
        let start = tokio::time::Instant::now();
        let limit = Duration::from_secs(2 * u64::from(heartbeat_secs));
        // One tick: bob heartbeats every interval, then the sweep runs. The time it ran at.
        let mut step = async || {
            tick.tick().await;
            let elapsed = start.elapsed();
            let now_ms = base_ms + elapsed.as_millis() as i64;
            if elapsed.as_secs().is_multiple_of(u64::from(heartbeat_secs)) {
                live.touch(now_ms);
            }
            if elapsed.as_secs().is_multiple_of(240) {
                slow.touch(now_ms);
            }
            sweep.once(&router, now_ms);
            elapsed
        };
        let closed_after = loop {
            let elapsed = step().await;
            if silent.is_closing() {
                break elapsed;
            }
            assert!(elapsed < limit * 2, "never closed");
        };
        assert!(closed_after > limit, "closed after {closed_after:?}");
        assert!(
            closed_after <= limit + sweep.period(),
            "closed after {closed_after:?}"
        );
        assert!(
            !live.is_closing(),
            "a connection that heartbeats was closed"
        );
        assert!(!slow.is_closing() && !slow_silent.is_closing());
        // Ten more minutes of heartbeats: still open. The silent one with 240 s is closed after
        // 480 s, within a period.
        let mut slow_closed = None;
        for _ in 0..(600 / 5) {
            let elapsed = step().await;
            if slow_silent.is_closing() && slow_closed.is_none() {
                slow_closed = Some(elapsed);
            }
        }
        assert!(!live.is_closing());
        assert!(
            !slow.is_closing(),
            "a 240 s heartbeat every 240 s was closed"
        );
        let slow_closed = slow_closed.expect("the silent 240 s connection was never closed");
        let slow_limit = Duration::from_secs(480);
        assert!(
            slow_closed > slow_limit && slow_closed <= slow_limit + sweep.period(),
            "closed after {slow_closed:?}"
        );
    }

    #[test]
    fn the_sweep_period_is_an_eighth_of_the_limit_within_bounds() {
        assert_eq!(Sweep::new(30).period(), Duration::from_secs(5));
        assert_eq!(Sweep::new(10).period(), Duration::from_millis(2500));
        assert_eq!(Sweep::new(1).period(), Duration::from_millis(250));
        assert_eq!(Sweep::new(3600).period(), Duration::from_secs(5));
    }
}
