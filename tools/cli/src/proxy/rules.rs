//! The fault language of `missive proxy`: one rule per `--fault` flag or per line of a
//! scenario file ([`parse_rule`]), and the proxy-wide [`Faults`] they build.
//!
//! ```text
//! [up|down] [COMMAND] [#N | #N-M | every:N] ACTION      a rule on frames
//!     ACTION: drop | dup | corrupt | cut | blackhole | hold | delay MS
//! delay MS [jitter MS]        every frame, both directions
//! throttle BYTES_PER_SEC      each direction of each connection
//! nat-idle SECS               black-hole a connection idle this long (both ways)
//! after SECS cut|blackhole    this long after each connection opens
//! refuse N                    close the next N connections at once
//! refuse-after-login N        let the next N log in, then cut them after LOGIN_ACK
//! ```
//!
//! `up` is client to server, `down` server to client; no direction means both. `#N` counts the
//! frames the rule matches over the proxy's life, from 1: `down PUSH #3 drop` drops the third
//! PUSH, on whatever connection it comes.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::decoded::parse_command;

/// A direction of travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }

    pub fn arrow(self) -> &'static str {
        match self {
            Dir::Up => "->",
            Dir::Down => "<-",
        }
    }
}

/// Which of the matching frames a rule acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nth {
    All,
    /// The N-th to the M-th (1-based, inclusive).
    Range(u64, u64),
    /// Every N-th.
    Every(u64),
}

impl Nth {
    fn hits(self, n: u64) -> bool {
        match self {
            Nth::All => true,
            Nth::Range(a, b) => (a..=b).contains(&n),
            Nth::Every(k) => n.is_multiple_of(k),
        }
    }
}

/// What a rule does to a frame it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not forwarded.
    Drop,
    /// Forwarded twice.
    Dup,
    /// Forwarded with one bit of its body (or CRC) flipped: the receiver's CRC check must
    /// catch it.
    Corrupt,
    /// The first half of the frame is forwarded, then both sides are closed.
    Cut,
    /// The connection becomes a black hole: nothing more is delivered either way, and
    /// neither side is closed (a phone that lost its network: no FIN).
    Blackhole,
    /// Held back, and released (latest first) right after the next frame in the same direction
    /// that is not held, or after a second: later versions arrive first.
    Hold,
    /// Forwarded this many milliseconds late (frames behind it wait too: TCP keeps order).
    Delay(u64),
}

/// A rule on frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRule {
    pub dir: Option<Dir>,
    pub command: Option<u16>,
    pub nth: Nth,
    pub action: Action,
    /// Frames matched so far.
    pub seen: u64,
}

impl FrameRule {
    pub fn new(dir: Dir, command: u16, nth: Nth, action: Action) -> FrameRule {
        FrameRule {
            dir: Some(dir),
            command: Some(command),
            nth,
            action,
            seen: 0,
        }
    }
}

/// What happens to a connection at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAction {
    Cut,
    Blackhole,
}

/// How the next connections are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Closed as soon as accepted.
    AtAccept,
    /// Closed right after the LOGIN_ACK is forwarded (a server that accepts and drops you).
    AfterLogin,
}

/// Every fault in force, shared by all connections of a proxy.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub rules: Vec<FrameRule>,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub throttle: Option<u64>,
    pub nat_idle: Option<Duration>,
    pub after: Vec<(Duration, ConnAction)>,
    pub refusals: std::collections::VecDeque<Refusal>,
}

/// One parsed line: a frame rule or a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Frame(FrameRule),
    Delay { ms: u64, jitter_ms: u64 },
    Throttle(u64),
    NatIdle(Duration),
    After(Duration, ConnAction),
    Refuse(u32, Refusal),
}

impl Faults {
    pub fn add(&mut self, rule: Rule) {
        match rule {
            Rule::Frame(r) => self.rules.push(r),
            Rule::Delay { ms, jitter_ms } => {
                self.delay_ms = ms;
                self.jitter_ms = jitter_ms;
            }
            Rule::Throttle(b) => self.throttle = Some(b),
            Rule::NatIdle(d) => self.nat_idle = Some(d),
            Rule::After(d, a) => self.after.push((d, a)),
            Rule::Refuse(n, how) => self.refusals.extend((0..n).map(|_| how)),
        }
    }

    /// The action for a frame going `dir` with `command`: every matching rule counts it, the
    /// first that hits it decides.
    pub fn decide(&mut self, dir: Dir, command: u16) -> Option<Action> {
        let mut decided = None;
        for r in &mut self.rules {
            if r.dir.is_some_and(|d| d != dir) || r.command.is_some_and(|c| c != command) {
                continue;
            }
            r.seen += 1;
            if decided.is_none() && r.nth.hits(r.seen) {
                decided = Some(r.action);
            }
        }
        decided
    }
}

fn number<T: std::str::FromStr>(word: Option<&str>, what: &str) -> Result<T> {
    let w = word.ok_or_else(|| anyhow!("{what}: a number is missing"))?;
    w.parse()
        .map_err(|_| anyhow!("{what}: `{w}` is not a number"))
}

fn secs(word: Option<&str>, what: &str) -> Result<Duration> {
    let w = word.ok_or_else(|| anyhow!("{what}: a duration is missing"))?;
    let w = w.strip_suffix('s').unwrap_or(w);
    let v: f64 = w
        .parse()
        .map_err(|_| anyhow!("{what}: `{w}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        bail!("{what}: {v} s is out of range");
    }
    Ok(Duration::from_secs_f64(v))
}

fn ms(word: Option<&str>, what: &str) -> Result<u64> {
    let w = word.ok_or_else(|| anyhow!("{what}: milliseconds are missing"))?;
    let w = w.strip_suffix("ms").unwrap_or(w);
    number(Some(w), what)
}

fn nth(word: &str) -> Result<Option<Nth>> {
    if let Some(k) = word.strip_prefix("every:") {
        let k: u64 = number(Some(k), "every:N")?;
        if k == 0 {
            bail!("every:0 matches nothing");
        }
        return Ok(Some(Nth::Every(k)));
    }
    let Some(rest) = word.strip_prefix('#') else {
        return Ok(None);
    };
    let (a, b) = match rest.split_once('-') {
        Some((a, b)) => (a, b.strip_prefix('#').unwrap_or(b)),
        None => (rest, rest),
    };
    let (a, b): (u64, u64) = (number(Some(a), "#N")?, number(Some(b), "#N-M")?);
    if a == 0 || b < a {
        bail!("`{word}`: frames count from #1, and #N-M needs N <= M");
    }
    Ok(Some(Nth::Range(a, b)))
}

/// Parses one rule (a `--fault` value or a scenario line without its comment).
pub fn parse_rule(text: &str) -> Result<Rule> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut it = words.iter().copied().peekable();
    let first = it.peek().copied().ok_or_else(|| anyhow!("empty rule"))?;
    match first {
        "delay" if words.len() != 2 && words.len() != 4 => {}
        "delay" => {
            it.next();
            let ms_v = ms(it.next(), "delay")?;
            let jitter_ms = match it.next() {
                Some("jitter") => ms(it.next(), "jitter")?,
                Some(w) => bail!("delay: unexpected `{w}`"),
                None => 0,
            };
            return Ok(Rule::Delay {
                ms: ms_v,
                jitter_ms,
            });
        }
        "throttle" => {
            let b: u64 = number(words.get(1).copied(), "throttle")?;
            if b == 0 || words.len() != 2 {
                bail!("throttle takes one rate above 0, in bytes per second");
            }
            return Ok(Rule::Throttle(b));
        }
        "nat-idle" => return Ok(Rule::NatIdle(secs(words.get(1).copied(), "nat-idle")?)),
        "after" => {
            let d = secs(words.get(1).copied(), "after")?;
            let a = match words.get(2).copied() {
                Some("cut") => ConnAction::Cut,
                Some("blackhole") => ConnAction::Blackhole,
                _ => bail!("after SECS takes `cut` or `blackhole`"),
            };
            return Ok(Rule::After(d, a));
        }
        "refuse" | "refuse-after-login" => {
            let n: u32 = number(words.get(1).copied(), first)?;
            let how = if first == "refuse" {
                Refusal::AtAccept
            } else {
                Refusal::AfterLogin
            };
            return Ok(Rule::Refuse(n, how));
        }
        _ => {}
    }
    let mut rule = FrameRule {
        dir: None,
        command: None,
        nth: Nth::All,
        action: Action::Drop,
        seen: 0,
    };
    let mut action = None;
    while let Some(w) = it.next() {
        if action.is_some() {
            bail!("`{w}` after the action");
        }
        match w {
            "up" | "down" if rule.dir.is_none() && rule.command.is_none() => {
                rule.dir = Some(if w == "up" { Dir::Up } else { Dir::Down });
            }
            "drop" => action = Some(Action::Drop),
            "dup" => action = Some(Action::Dup),
            "corrupt" => action = Some(Action::Corrupt),
            "cut" => action = Some(Action::Cut),
            "blackhole" => action = Some(Action::Blackhole),
            "hold" => action = Some(Action::Hold),
            "delay" => action = Some(Action::Delay(ms(it.next(), "delay")?)),
            _ => {
                if let Some(n) = nth(w)? {
                    rule.nth = n;
                } else if rule.command.is_none() {
                    rule.command = Some(
                        parse_command(w).map_err(|_| anyhow!("`{w}`: not a command or action"))?,
                    );
                } else {
                    bail!(
                        "`{w}`: not an action (drop, dup, corrupt, cut, blackhole, hold, delay MS)"
                    );
                }
            }
        }
    }
    rule.action = action.ok_or_else(|| anyhow!("`{text}`: no action"))?;
    Ok(Rule::Frame(rule))
}

/// Parses a scenario file: one rule per line, `#` starts a comment (but `#3` after a space is
/// a frame number).
pub fn parse_scenario(text: &str) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let body = if line.starts_with('#') {
            ""
        } else {
            match line.find(" # ") {
                Some(at) => &line[..at],
                None => line,
            }
        };
        if body.trim().is_empty() {
            continue;
        }
        rules.push(parse_rule(body).map_err(|e| anyhow!("line {}: {e}", i + 1))?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_as_documented() {
        let Rule::Frame(r) = parse_rule("down PUSH #3 drop").unwrap() else {
            panic!()
        };
        assert_eq!(r.dir, Some(Dir::Down));
        assert_eq!(r.command, Some(0x4001));
        assert_eq!(r.nth, Nth::Range(3, 3));
        assert_eq!(r.action, Action::Drop);
        let Rule::Frame(r) = parse_rule("PUSH #7-#8 hold").unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.dir, r.nth, r.action),
            (None, Nth::Range(7, 8), Action::Hold)
        );
        let Rule::Frame(r) = parse_rule("up every:2 delay 30").unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.command, r.nth, r.action),
            (None, Nth::Every(2), Action::Delay(30))
        );
        assert_eq!(
            parse_rule("delay 50ms jitter 20").unwrap(),
            Rule::Delay {
                ms: 50,
                jitter_ms: 20
            }
        );
        assert_eq!(
            parse_rule("nat-idle 20s").unwrap(),
            Rule::NatIdle(Duration::from_secs(20))
        );
        assert_eq!(
            parse_rule("refuse-after-login 2").unwrap(),
            Rule::Refuse(2, Refusal::AfterLogin)
        );
        for bad in [
            "",
            "down PUSH",
            "down PUSH #0 drop",
            "down BOGUS drop",
            "drop dup",
            "throttle 0",
            "after 5 explode",
            "down PUSH #4-#2 drop",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_rule_that_hits_decides_and_every_match_counts() {
        let mut f = Faults::default();
        for text in ["down PUSH #2 drop", "down PUSH #2-#3 dup"] {
            f.add(parse_rule(text).unwrap());
        }
        let got: Vec<_> = (0..4).map(|_| f.decide(Dir::Down, 0x4001)).collect();
        assert_eq!(got, [None, Some(Action::Drop), Some(Action::Dup), None]);
        assert_eq!(f.decide(Dir::Up, 0x4001), None);
        let rules =
            parse_scenario("# a comment\ndown PUSH #1 drop # the first\n\nrefuse 2\n").unwrap();
        assert_eq!(rules.len(), 2);
        assert!(parse_scenario("down PUSH drop\nnonsense\n")
            .unwrap_err()
            .to_string()
            .starts_with("line 2"));
    }
}
