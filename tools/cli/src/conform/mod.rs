//! `missive conform`: a scripted run against a client under test that connects through the
//! proxy. conform tells the engineer (or a test's driver, with `--json`) what to do with the
//! app, injects the faults of each step, plays a peer user on a connection of its own, and
//! checks what crossed the proxy against the rules of [`check`]. It prints a pass/fail report
//! per rule with the PROTOCOL.md sections it comes from.

pub mod check;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use missive_client::{direct, pb, Backoff, Client, ClientConfig, ClientEvent};
use missive_protocol::{Frame, Packet};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::args::{ConformArgs, Global};
use crate::proxy::capture::CaptureWriter;
use crate::proxy::rules::{Action, Dir, Faults, FrameRule, Nth, Refusal};
use crate::proxy::run::{event_json, event_line};
use crate::proxy::{Event, Proxy};
use check::Checker;

const STEPS: u32 = 8;

struct Run {
    proxy: Proxy,
    events: mpsc::UnboundedReceiver<Event>,
    checker: Checker,
    capture: Option<CaptureWriter>,
    json: bool,
    verbose: bool,
    peer_events: Option<mpsc::UnboundedReceiver<ClientEvent>>,
    peer: Option<Arc<Client>>,
    peer_sent: Vec<Vec<u8>>,
    step: u32,
    run_tag: String,
}

impl Run {
    /// Prints a step: for people, or one JSON line for a driver.
    fn say(&mut self, name: &str, text: &str, extra: serde_json::Value) {
        self.step += 1;
        if self.json {
            let mut v =
                json!({"event": "step", "step": name, "n": self.step, "of": STEPS, "say": text});
            if let (Some(o), serde_json::Value::Object(m)) = (v.as_object_mut(), extra) {
                o.extend(m);
            }
            println!("{v}");
        } else {
            println!("\n== step {}/{STEPS}: {name} ==\n{text}", self.step);
        }
    }

    fn note(&self, text: &str) {
        if self.json {
            println!("{}", json!({"event": "note", "say": text}));
        } else {
            println!("   {text}");
        }
    }

    fn record(&mut self, e: Event) {
        if let Some(c) = self.capture.as_mut() {
            c.write(&e);
        }
        if self.verbose {
            if self.json {
                println!("{}", json!({"event": "frame", "at": event_json(&e)}));
            } else {
                println!("{}", event_line(&e));
            }
        }
        self.checker.event(&e);
    }

    /// Waits up to `limit` for the app to log in on a connection other than `old`; if it does
    /// not, `rule` fails with "the app did not reconnect after {after}".
    async fn relogin(
        &mut self,
        limit: Duration,
        old: Option<u32>,
        rule: &'static str,
        after: &str,
    ) -> bool {
        let back = self
            .until(limit, move |r| {
                r.checker.logged_in().is_some() && r.checker.current != old
            })
            .await;
        if !back {
            self.checker
                .fail(rule, format!("the app did not reconnect after {after}"));
        }
        back
    }

    /// Follows events until `done` holds or `limit` passes; whether `done` held.
    async fn until(&mut self, limit: Duration, done: impl Fn(&Run) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            if done(self) {
                return true;
            }
            tokio::select! {
                e = self.events.recv() => match e {
                    Some(e) => self.record(e),
                    None => return false,
                },
                e = async { match self.peer_events.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    if let Some(ClientEvent::Entry(entry)) = e {
                        if let Some(pb::inbox_entry::Body::Message(m)) = &entry.body {
                            if Some(&m.from_user) == self.checker.user.as_ref() {
                                self.checker.peer_received(m);
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = self.proxy.now();
                    self.checker.tick(now);
                }
                _ = tokio::time::sleep_until(deadline) => return done(self),
            }
        }
    }

    /// Follows events for `d`.
    async fn idle(&mut self, d: Duration) {
        self.until(d, |_| false).await;
    }

    /// The peer sends `n` messages to the user, `gap` apart, without waiting for the acks in
    /// between; their contents.
    fn peer_sends(&mut self, label: &str, n: u32, gap: Duration) -> Vec<Vec<u8>> {
        let Some(peer) = self.peer.clone() else {
            return Vec::new();
        };
        let user = self.checker.user.clone().unwrap_or_default();
        let contents: Vec<Vec<u8>> = (1..=n)
            .map(|i| format!("conform {label} {i}/{n} [{}]", self.run_tag).into_bytes())
            .collect();
        self.peer_sent.extend(contents.iter().cloned());
        let list = contents.clone();
        tokio::spawn(async move {
            for c in list {
                let p = peer.clone();
                let to = user.clone();
                tokio::spawn(async move {
                    if let Err(e) = p.send(direct(&to), 1, c, None).await {
                        eprintln!("conform: the peer's SEND failed: {e}");
                    }
                });
                tokio::time::sleep(gap).await;
            }
        });
        contents
    }

    /// Waits until every content reached the client and was acknowledged.
    async fn until_acked(&mut self, contents: &[Vec<u8>], limit: Duration) -> bool {
        let wanted = contents.to_vec();
        self.until(limit, move |r| {
            wanted.iter().all(|c| {
                r.checker
                    .from_peer
                    .get(c)
                    .is_some_and(|&v| v <= r.checker.acked)
            })
        })
        .await
    }

    fn clear_frame_rules(&self) {
        self.proxy.faults(|f| f.rules.clear());
    }
}

fn kick_frame(reason: pb::KickReason, host: &str, port: u16, after_ms: u32) -> Bytes {
    let kick = pb::Kick {
        reason: reason as i32,
        message: "missive conform: move to the other address".into(),
        redirect_host: host.into(),
        redirect_port: port.into(),
        reconnect_after_ms: after_ms,
    };
    Frame::new(&Packet::Kick(kick), 0).to_bytes()
}

/// `missive conform`.
pub async fn conform(g: &Global, a: ConformArgs, secret: String) -> Result<ExitCode> {
    if a.refusals == 0 || a.refusals > 10 {
        bail!("--refusals must be 1..=10");
    }
    let upstream = g.addr.strip_prefix("tcp://").unwrap_or(&g.addr).to_string();
    let (proxy, events) = Proxy::start(
        &[a.listen.clone(), a.redirect_listen.clone()],
        &upstream,
        Faults::default(),
    )
    .await?;
    let listen = proxy.local_addrs()[0];
    let alt = proxy.local_addrs()[1];
    let capture = match &a.capture {
        Some(p) => Some(CaptureWriter::create(p)?),
        None => None,
    };
    let base = Duration::from_millis(a.backoff_base_ms.max(1));
    let reset = Duration::from_secs(a.backoff_reset_secs);
    let mut run = Run {
        proxy: proxy.clone(),
        events,
        checker: Checker::new(secret.as_bytes(), &a.peer, base, reset),
        capture,
        json: g.json,
        verbose: a.verbose,
        peer_events: None,
        peer: None,
        peer_sent: Vec::new(),
        step: 0,
        run_tag: format!("{:06x}", rand::random::<u32>() & 0xFF_FFFF),
    };
    let wait = Duration::from_secs(a.wait_secs);
    if g.json {
        println!(
            "{}",
            json!({"event": "listening", "addr": listen.to_string(), "redirect_addr": alt.to_string(), "server": upstream, "peer": a.peer})
        );
    } else {
        println!("missive conform: the app connects to {listen} (plain TCP); conform forwards to {upstream}.");
        println!(
            "The peer user is `{}`. Keep the app in the foreground unless told otherwise.",
            a.peer
        );
    }

    // 1. connect
    run.say(
        "connect",
        &format!("Start the app with {listen} as its server and log in."),
        json!({"addr": listen.to_string()}),
    );
    if !run.until(wait, |r| r.checker.logged_in().is_some()).await {
        return report(run, "no client logged in through the proxy");
    }
    let Some(user) = run.checker.user.clone() else {
        return report(run, "the app's token is not one this server's secret signed: give conform the server's --secret or --data-dir");
    };
    if user == a.peer {
        bail!("the app logged in as the peer user `{user}`: pick another --peer");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token =
        missive_protocol::token::mint_v2(secret.as_bytes(), &a.peer, "conform", now, now + 86_400);
    let mut cfg = ClientConfig::new(upstream.clone(), token, "conform");
    cfg.backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        ..Default::default()
    };
    let mut peer = Client::connect(cfg)
        .await
        .map_err(|e| anyhow!("the peer `{}` cannot log in to {upstream}: {e}", a.peer))?;
    run.peer_events = peer.events();
    run.peer = Some(Arc::new(peer));
    // Let the app settle into its session before the first fault.
    run.idle(Duration::from_secs(1)).await;
    run.note(&format!(
        "logged in as `{user}`; H = {} s",
        run.checker.h().map_or(0, |h| h.as_secs())
    ));

    // 2. backoff
    run.say(
        "backoff",
        &format!(
            "Keep the app open. conform drops its connection, then the next {} connections \
             (the first at connect, the others right after LOGIN_ACK): the app must reconnect \
             each time, backing off further each time (PROTOCOL.md 21).",
            a.refusals
        ),
        json!({}),
    );
    proxy.faults(|f| {
        // One closed at connect, then the rest after LOGIN_ACK: a client that starts its
        // backoff again at every LOGIN_ACK waits no more than the first step each time.
        for i in 0..a.refusals {
            f.refusals.push_back(if i == 0 {
                Refusal::AtAccept
            } else {
                Refusal::AfterLogin
            });
        }
    });
    let cut = run.checker.logged_in().unwrap_or(0);
    proxy.cut(cut, "conform: backoff step");
    // Connections are numbered in order: the refused ones come right after the cut one.
    let last_refused = cut + a.refusals;
    let caps: Duration = (0..=a.refusals)
        .map(|k| (base * (1 << k.min(16))).min(Duration::from_secs(60)))
        .sum();
    let ok = run
        .until(caps + wait, move |r| {
            r.checker.logged_in().is_some_and(|c| c > last_refused)
        })
        .await;
    if !ok {
        run.proxy.faults(|f| f.refusals.clear());
        run.checker.fail(
            "backoff",
            "the app did not come back after the refusals".into(),
        );
        if !run.until(wait, |r| r.checker.logged_in().is_some()).await {
            return report(run, "the app did not reconnect");
        }
    }

    // 3. idle
    let h = run.checker.h().unwrap_or(Duration::from_secs(30));
    let idle = (h * 5 / 2).max(reset + Duration::from_secs(4));
    run.say(
        "idle",
        &format!(
            "Leave the app idle in the foreground for {} s: it heartbeats every H = {} s \
             (PROTOCOL.md 11).",
            idle.as_secs(),
            h.as_secs()
        ),
        json!({"secs": idle.as_secs()}),
    );
    run.idle(idle).await;

    // 4. receive, with faults
    let n = a.messages.max(12);
    run.say(
        "receive",
        &format!(
            "Keep the app open on the chat with `{}`: it sends you {n} messages. conform drops \
             the 3rd PUSH, duplicates the 5th, holds the 7th and 8th back so that the 9th comes \
             first, corrupts the 11th, and drops your 2nd PUSH_ACK.",
            a.peer
        ),
        json!({"from": a.peer, "count": n}),
    );
    proxy.faults(|f| {
        let push = 0x4001;
        f.rules = vec![
            FrameRule::new(Dir::Down, push, Nth::Range(3, 3), Action::Drop),
            FrameRule::new(Dir::Down, push, Nth::Range(5, 5), Action::Dup),
            FrameRule::new(Dir::Down, push, Nth::Range(7, 8), Action::Hold),
            FrameRule::new(Dir::Down, push, Nth::Range(11, 11), Action::Corrupt),
            FrameRule::new(Dir::Up, 0x0004, Nth::Range(2, 2), Action::Drop),
        ];
    });
    let sent = run.peer_sends("receive", n, Duration::from_millis(100));
    if !run.until_acked(&sent, wait + h * 3).await {
        run.note("not every message was acknowledged in time");
    }
    run.clear_frame_rules();

    // 5. send, with a cut
    let send_n = 3;
    run.say(
        "send",
        &format!(
            "In the app, send {send_n} text messages to `{}`, one after another, each \
             different. conform cuts the connection in the middle of the 2nd SEND_ACK: the \
             app must reconnect and send that message again with the same client_msg_id \
             (PROTOCOL.md 14).",
            a.peer
        ),
        json!({"to": a.peer, "count": send_n}),
    );
    proxy.faults(|f| {
        f.rules = vec![FrameRule::new(
            Dir::Down,
            0x8003,
            Nth::Range(2, 2),
            Action::Cut,
        )];
    });
    let peer_name = a.peer.clone();
    let got_all = run
        .until(wait, move |r| {
            r.checker.acked_sends_to(&peer_name).len() >= send_n && r.checker.peer_got() >= send_n
        })
        .await;
    if !got_all {
        run.note("fewer messages than asked reached the peer");
    }
    // Duplicates, if any, take a moment to reach the peer.
    run.idle(Duration::from_millis(500)).await;
    run.clear_frame_rules();

    // 6. redirect
    let after_ms = 1500;
    run.say(
        "redirect",
        &format!(
            "Keep the app open. conform sends KICK REDIRECT to {alt} with reconnect_after_ms \
             {after_ms}: the app must wait that long and reconnect there (PROTOCOL.md 18, 21)."
        ),
        json!({"redirect_addr": alt.to_string()}),
    );
    if !run.until(wait, |r| r.checker.logged_in().is_some()).await {
        return report(run, "the app was not connected for the redirect");
    }
    if let Some(c) = run.checker.logged_in() {
        let now = proxy.now();
        run.checker.expect_redirect(1, now, after_ms);
        // The host the app used to reach conform, when the redirect listener is on every
        // interface (a phone on the LAN cannot connect to 0.0.0.0).
        let host = if alt.ip().is_unspecified() {
            run.checker.local_addr(c).map_or(alt.ip(), |a| a.ip())
        } else {
            alt.ip()
        };
        let kick = kick_frame(
            pb::KickReason::Redirect,
            &host.to_string(),
            alt.port(),
            after_ms,
        );
        proxy.inject_and_close(c, kick, "conform: KICK REDIRECT");
    }
    let kicked = run.checker.current;
    let limit = wait + Duration::from_millis(after_ms.into());
    if !run
        .relogin(limit, kicked, "redirect", "KICK REDIRECT")
        .await
    {
        return report(run, "the app did not reconnect after the redirect");
    }

    // 7. dead link
    let h = run.checker.h().unwrap_or(h);
    run.say(
        "dead-link",
        &format!(
            "Keep the app open and idle. Its connection now becomes a black hole, as when a NAT \
             forgets it: no FIN, nothing delivered. The app must notice within 2·H = {} s and \
             reconnect (PROTOCOL.md 11).",
            2 * h.as_secs()
        ),
        json!({"secs": 2 * h.as_secs()}),
    );
    let holed = run.checker.logged_in();
    if let Some(c) = holed {
        proxy.blackhole(c, "conform: dead link");
    }
    let limit = h * 2 + Duration::from_secs(5) + wait;
    if !run
        .relogin(limit, holed, "dead-link", "the black hole")
        .await
    {
        return report(run, "the app did not reconnect after the black hole");
    }

    // 8. final
    run.say(
        "final",
        &format!("Keep the app open: `{}` sends 3 more messages.", a.peer),
        json!({"from": a.peer, "count": 3}),
    );
    let last = run.peer_sends("final", 3, Duration::from_millis(100));
    if !run.until_acked(&last, wait).await {
        run.note("the last messages were not all acknowledged in time");
    }
    report(run, "")
}

/// Prints the report; success if every rule passed.
fn report(mut run: Run, aborted: &str) -> Result<ExitCode> {
    let peer_sent = std::mem::take(&mut run.peer_sent);
    run.checker.finish(&peer_sent);
    let results = run.checker.results();
    let mut all = aborted.is_empty();
    let mut rules = Vec::new();
    let mut verdicts = Vec::new();
    for (rule, checks, violations) in &results {
        let result = if !violations.is_empty() {
            "fail"
        } else if *checks == 0 {
            "not exercised"
        } else {
            "pass"
        };
        verdicts.push(result);
        all &= result == "pass";
        rules.push(json!({
            "id": rule.id, "section": rule.section, "title": rule.title, "result": result,
            "checks": checks, "violations": violations,
        }));
    }
    if run.json {
        println!(
            "{}",
            json!({"event": "report", "pass": all, "aborted": (!aborted.is_empty()).then_some(aborted),
                   "user": run.checker.user, "device": run.checker.device, "rules": rules})
        );
    } else {
        println!(
            "\n== report: user {}, device {} ==",
            run.checker.user.as_deref().unwrap_or("?"),
            run.checker.device.as_deref().unwrap_or("?")
        );
        if !aborted.is_empty() {
            println!("run aborted: {aborted}");
        }
        for ((rule, checks, violations), verdict) in results.iter().zip(verdicts) {
            let result = match verdict {
                "fail" => "FAIL",
                "pass" => "PASS",
                _ => "----",
            };
            let plural = if *checks == 1 { "" } else { "s" };
            println!(
                "{result}  {:<13} §{:<11} {} ({checks} check{plural})",
                rule.id, rule.section, rule.title
            );
            for v in violations {
                println!("        - {v}");
            }
        }
        println!(
            "{}",
            if all {
                "\nevery rule passed"
            } else {
                "\nsome rules failed or were not exercised (----)"
            }
        );
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
