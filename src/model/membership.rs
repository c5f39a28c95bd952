//! A coordinator's cluster membership, as decisions: when to ping a node,
//! when it is lost, when to dial it again or restart it, and when it is
//! given up. The `Membership` actor feeds it events with the time (in
//! milliseconds of the pause clock: time the coordinator was stopped does
//! not count) and carries out its [`MemberCommand`]s.
//!
//! A member is a node the coordinator was given: a **local** one (a child
//! process the launcher started, restarted when lost, within the restart
//! intensity) or a **remote** one (dialled again when lost, with backoff).
//! Each connection attempt has a number; events of an older attempt are
//! ignored, so a late event never touches a newer connection.

use std::collections::VecDeque;

/// How a membership behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSettings {
    /// A node silent this long (ms) is lost; pings go every third of it.
    pub heartbeat_timeout: u64,
    /// Backoff before dialling (or restarting) again: from this (ms) ...
    pub backoff_min: u64,
    /// ... doubling up to this (ms).
    pub backoff_max: u64,
    /// Restart intensity: at most this many restarts of local nodes ...
    pub max_restarts: usize,
    /// ... within this window (ms); one more and the node is given up.
    pub restart_window: u64,
    /// A node down this long (ms) counts as given up for runs deciding
    /// whether to wait for it (it is still dialled).
    pub give_up: u64,
}

impl MemberSettings {
    /// Defaults for a heartbeat timeout: backoff 100 ms to 5 s, 10 restarts
    /// a minute, give up after three heartbeat timeouts (at least 3 s).
    pub fn new(heartbeat_timeout: u64) -> Self {
        MemberSettings {
            heartbeat_timeout,
            backoff_min: 100,
            backoff_max: 5_000,
            max_restarts: 10,
            restart_window: 60_000,
            give_up: (3 * heartbeat_timeout).max(3_000),
        }
    }

    fn period(&self) -> u64 {
        (self.heartbeat_timeout / 3).max(10)
    }
}

/// Where a member's process comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Started by the coordinator's launcher: restarted when lost.
    Local,
    /// Started by someone else: dialled again when lost.
    Remote,
}

/// A member's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected and joined.
    Up {
        /// When the last ping was sent.
        pinged: u64,
        /// The ping not yet answered, sent at this time.
        waiting: Option<u64>,
    },
    /// Lost; dialling (or restarting) again at `until`.
    Waiting {
        /// When.
        until: u64,
    },
    /// The launcher is restarting it.
    Restarting,
    /// Given up for good: the reason.
    Failed(String),
}

/// What the membership actor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberCommand {
    /// Open connection `attempt` to the member.
    Connect {
        /// The member.
        member: usize,
        /// The attempt's number.
        attempt: u32,
    },
    /// Send the member a heartbeat.
    Ping {
        /// The member.
        member: usize,
    },
    /// The member is lost: close its connection and tell the runs.
    Lost {
        /// The member.
        member: usize,
        /// Why.
        reason: String,
    },
    /// Restart the member's process (kill it if it still runs).
    Restart {
        /// The member.
        member: usize,
    },
    /// The member is given up for good: tell the runs.
    GiveUp {
        /// The member.
        member: usize,
        /// Why.
        reason: String,
    },
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// It may work later (unreachable, refused at the node's cap).
    Transient(String),
    /// It will not work without a change (wrong cookie, another protocol).
    Permanent(String),
}

#[derive(Debug, Clone)]
struct Member {
    origin: Origin,
    state: MemberState,
    attempt: u32,
    /// Failed attempts since the last success (for backoff).
    failures: u32,
    /// Since when it has been down (not up), if it is.
    down_since: Option<u64>,
}

/// Every member's state and the decisions about them.
#[derive(Debug, Clone)]
pub struct Members {
    settings: MemberSettings,
    members: Vec<Member>,
    /// Times of recent restarts of local nodes (the restart intensity).
    restarts: VecDeque<u64>,
}

impl Members {
    /// Members of these origins, all connecting at `now` (local ones have
    /// just been started).
    pub fn new(
        settings: MemberSettings,
        origins: &[Origin],
        now: u64,
    ) -> (Self, Vec<MemberCommand>) {
        let members = origins
            .iter()
            .map(|&origin| Member {
                origin,
                state: MemberState::Connecting,
                attempt: 0,
                failures: 0,
                down_since: Some(now),
            })
            .collect();
        let commands = (0..origins.len())
            .map(|member| MemberCommand::Connect { member, attempt: 0 })
            .collect();
        (Members { settings, members, restarts: VecDeque::new() }, commands)
    }

    /// Adds a member, connecting at `now`.
    pub fn add(&mut self, origin: Origin, now: u64) -> (usize, Vec<MemberCommand>) {
        self.members.push(Member {
            origin,
            state: MemberState::Connecting,
            attempt: 0,
            failures: 0,
            down_since: Some(now),
        });
        let member = self.members.len() - 1;
        (member, vec![MemberCommand::Connect { member, attempt: 0 }])
    }

    /// The settings.
    pub fn settings(&self) -> &MemberSettings {
        &self.settings
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A member's state.
    pub fn state(&self, member: usize) -> &MemberState {
        &self.members[member].state
    }

    /// Its current attempt.
    pub fn attempt(&self, member: usize) -> u32 {
        self.members[member].attempt
    }

    /// Whether it is up.
    pub fn is_up(&self, member: usize) -> bool {
        matches!(self.members[member].state, MemberState::Up { .. })
    }

    /// Whether runs should stop waiting for it: failed, or down for the
    /// give-up time.
    pub fn given_up(&self, member: usize, now: u64) -> bool {
        let m = &self.members[member];
        matches!(m.state, MemberState::Failed(_))
            || m.down_since.is_some_and(|since| now.saturating_sub(since) >= self.settings.give_up)
    }

    /// Time passes: heartbeats, timeouts, retries.
    pub fn tick(&mut self, now: u64) -> Vec<MemberCommand> {
        let mut commands = Vec::new();
        let (period, timeout) = (self.settings.period(), self.settings.heartbeat_timeout);
        for member in 0..self.members.len() {
            match self.members[member].state.clone() {
                MemberState::Up { waiting: Some(sent), .. }
                    if now.saturating_sub(sent) >= timeout =>
                {
                    let reason = format!("missed heartbeats: no answer for {}", millis(timeout));
                    self.lose(member, reason, now, &mut commands);
                }
                MemberState::Up { pinged, waiting: None }
                    if now.saturating_sub(pinged) >= period =>
                {
                    self.members[member].state =
                        MemberState::Up { pinged: now, waiting: Some(now) };
                    commands.push(MemberCommand::Ping { member });
                }
                MemberState::Waiting { until } if now >= until => {
                    self.retry(member, now, &mut commands)
                }
                _ => {}
            }
        }
        commands
    }

    /// Connection `attempt` is up and joined.
    pub fn connected(&mut self, member: usize, attempt: u32, now: u64) -> Vec<MemberCommand> {
        let m = &mut self.members[member];
        if m.attempt != attempt || m.state != MemberState::Connecting {
            return Vec::new();
        }
        m.state = MemberState::Up { pinged: now, waiting: None };
        m.failures = 0;
        m.down_since = None;
        Vec::new()
    }

    /// Connection `attempt` failed before it was up.
    pub fn connect_failed(
        &mut self,
        member: usize,
        attempt: u32,
        failure: ConnectFailure,
        now: u64,
    ) -> Vec<MemberCommand> {
        let mut commands = Vec::new();
        let m = &mut self.members[member];
        if m.attempt != attempt || m.state != MemberState::Connecting {
            return commands;
        }
        match failure {
            ConnectFailure::Permanent(reason) => {
                m.state = MemberState::Failed(reason.clone());
                commands.push(MemberCommand::GiveUp { member, reason });
            }
            ConnectFailure::Transient(_) => {
                m.failures += 1;
                let failures = m.failures;
                let until = now + self.backoff(failures);
                self.members[member].state = MemberState::Waiting { until };
            }
        }
        commands
    }

    /// A heartbeat of connection `attempt` was answered.
    pub fn pong(&mut self, member: usize, attempt: u32) {
        let m = &mut self.members[member];
        if m.attempt != attempt {
            return;
        }
        if let MemberState::Up { pinged, .. } = m.state {
            m.state = MemberState::Up { pinged, waiting: None };
        }
    }

    /// Connection `attempt` closed.
    pub fn closed(&mut self, member: usize, attempt: u32, now: u64) -> Vec<MemberCommand> {
        let mut commands = Vec::new();
        if self.members[member].attempt != attempt {
            return commands;
        }
        match self.members[member].state {
            MemberState::Up { waiting, .. } => {
                // A stopped node's connection may be closed by something
                // else first; an overdue heartbeat says what happened.
                let overdue = waiting
                    .filter(|&sent| now.saturating_sub(sent) > self.settings.heartbeat_timeout / 2);
                let reason = match overdue {
                    Some(sent) => format!(
                        "missed heartbeats (no answer for {}), then the connection closed",
                        millis(now.saturating_sub(sent))
                    ),
                    None => "connection closed".to_string(),
                };
                self.lose(member, reason, now, &mut commands);
            }
            MemberState::Connecting => {
                let failure = ConnectFailure::Transient("connection closed".to_string());
                commands = self.connect_failed(member, attempt, failure, now);
            }
            _ => {}
        }
        commands
    }

    /// A run gives the member up (a walk timed out on it): lost at once.
    pub fn kill(&mut self, member: usize, reason: String, now: u64) -> Vec<MemberCommand> {
        let mut commands = Vec::new();
        if self.is_up(member) {
            self.lose(member, reason, now, &mut commands);
        }
        commands
    }

    /// The launcher restarted the member (or could not).
    pub fn restarted(
        &mut self,
        member: usize,
        result: Result<(), String>,
        now: u64,
    ) -> Vec<MemberCommand> {
        let mut commands = Vec::new();
        if self.members[member].state != MemberState::Restarting {
            return commands;
        }
        match result {
            Ok(()) => {
                let m = &mut self.members[member];
                m.attempt += 1;
                m.state = MemberState::Connecting;
                commands.push(MemberCommand::Connect { member, attempt: m.attempt });
            }
            Err(reason) => {
                let m = &mut self.members[member];
                m.failures += 1;
                let until = now + self.backoff(self.members[member].failures);
                self.members[member].state = MemberState::Waiting { until };
                let _ = reason;
            }
        }
        commands
    }

    fn lose(&mut self, member: usize, reason: String, now: u64, commands: &mut Vec<MemberCommand>) {
        self.members[member].down_since = Some(now);
        commands.push(MemberCommand::Lost { member, reason });
        // A restart (or a new dial) right away; later ones back off.
        let failures = self.members[member].failures;
        let until = now + if failures == 0 { 0 } else { self.backoff(failures) };
        self.members[member].state = MemberState::Waiting { until };
        if until <= now {
            self.retry(member, now, commands);
        }
    }

    /// Dials again (remote) or restarts (local), within the intensity.
    fn retry(&mut self, member: usize, now: u64, commands: &mut Vec<MemberCommand>) {
        match self.members[member].origin {
            Origin::Remote => {
                let m = &mut self.members[member];
                m.attempt += 1;
                m.state = MemberState::Connecting;
                commands.push(MemberCommand::Connect { member, attempt: m.attempt });
            }
            Origin::Local => {
                let window = self.settings.restart_window;
                while self.restarts.front().is_some_and(|&t| now.saturating_sub(t) > window) {
                    self.restarts.pop_front();
                }
                if self.restarts.len() >= self.settings.max_restarts {
                    let reason = format!(
                        "more than {} node restarts within {}",
                        self.settings.max_restarts,
                        millis(window)
                    );
                    self.members[member].state = MemberState::Failed(reason.clone());
                    commands.push(MemberCommand::GiveUp { member, reason });
                    return;
                }
                self.restarts.push_back(now);
                self.members[member].failures += 1;
                self.members[member].state = MemberState::Restarting;
                commands.push(MemberCommand::Restart { member });
            }
        }
    }

    /// Backoff before attempt number `failures` (1-based).
    fn backoff(&self, failures: u32) -> u64 {
        let doubled =
            self.settings.backoff_min.saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(self.settings.backoff_max)
    }

    /// Restarts counted in the current window.
    pub fn recent_restarts(&self) -> usize {
        self.restarts.len()
    }
}

/// "2s", "1.5s", "250ms".
fn millis(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MemberSettings {
        MemberSettings { max_restarts: 2, ..MemberSettings::new(3_000) }
    }

    #[test]
    fn a_silent_node_is_lost_after_the_timeout_and_dialled_again() {
        let (mut m, commands) = Members::new(settings(), &[Origin::Remote], 0);
        assert_eq!(commands, vec![MemberCommand::Connect { member: 0, attempt: 0 }]);
        assert!(m.connected(0, 0, 0).is_empty());
        assert_eq!(m.tick(999), vec![]);
        assert_eq!(m.tick(1_000), vec![MemberCommand::Ping { member: 0 }]);
        m.pong(0, 0);
        assert_eq!(m.tick(2_000), vec![MemberCommand::Ping { member: 0 }]);
        // No answer for the timeout: lost, and dialled again at once.
        assert_eq!(m.tick(4_999), vec![]);
        let commands = m.tick(5_000);
        assert!(
            matches!(&commands[0], MemberCommand::Lost { member: 0, reason } if reason.contains("missed heartbeats"))
        );
        assert_eq!(commands[1], MemberCommand::Connect { member: 0, attempt: 1 });
        // Events of the old attempt are ignored.
        m.pong(0, 0);
        assert!(m.closed(0, 0, 5_001).is_empty());
        // A failed dial backs off, doubling.
        assert!(
            m.connect_failed(0, 1, ConnectFailure::Transient("refused".into()), 5_100).is_empty()
        );
        assert_eq!(m.state(0), &MemberState::Waiting { until: 5_200 });
        assert_eq!(m.tick(5_200), vec![MemberCommand::Connect { member: 0, attempt: 2 }]);
        m.connect_failed(0, 2, ConnectFailure::Transient("refused".into()), 5_300);
        assert_eq!(m.state(0), &MemberState::Waiting { until: 5_500 });
    }

    #[test]
    fn a_closed_connection_says_whether_heartbeats_were_missed() {
        let (mut m, _) = Members::new(settings(), &[Origin::Remote, Origin::Remote], 0);
        m.connected(0, 0, 0);
        m.connected(1, 0, 0);
        m.tick(1_000);
        let lost = |commands: Vec<MemberCommand>| match &commands[0] {
            MemberCommand::Lost { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(lost(m.closed(0, 0, 1_100)), "connection closed");
        assert!(lost(m.closed(1, 0, 3_000)).starts_with("missed heartbeats (no answer for 2s)"));
    }

    #[test]
    fn local_nodes_restart_within_the_intensity_then_are_given_up() {
        let (mut m, _) = Members::new(settings(), &[Origin::Local], 0);
        m.connected(0, 0, 0);
        for round in 0..2u64 {
            let at = 10 + round * 100;
            let commands = m.kill(0, "a walk timed out".into(), at);
            assert_eq!(
                commands.last(),
                Some(&MemberCommand::Restart { member: 0 }),
                "{commands:?}"
            );
            let commands = m.restarted(0, Ok(()), at + 1);
            let attempt = m.attempt(0);
            assert_eq!(commands, vec![MemberCommand::Connect { member: 0, attempt }]);
            m.connected(0, attempt, at + 2);
        }
        let commands = m.closed(0, m.attempt(0), 300);
        assert!(
            matches!(commands.last(), Some(MemberCommand::GiveUp { reason, .. }) if reason.contains("more than 2 node restarts"))
        );
        assert!(m.given_up(0, 300));
    }

    #[test]
    fn a_node_down_long_enough_counts_as_given_up_but_is_still_dialled() {
        let (mut m, _) = Members::new(settings(), &[Origin::Remote], 0);
        m.connected(0, 0, 0);
        m.closed(0, 0, 100);
        assert!(!m.given_up(0, 100));
        assert!(m.given_up(0, 9_100));
        m.connect_failed(0, 1, ConnectFailure::Transient("refused".into()), 9_200);
        assert!(matches!(m.tick(40_000)[..], [MemberCommand::Connect { .. }]));
        // Back up: no longer given up.
        m.connected(0, 2, 40_001);
        assert!(!m.given_up(0, 40_002));
    }

    #[test]
    fn a_permanent_failure_gives_up_at_once() {
        let (mut m, _) = Members::new(settings(), &[Origin::Remote], 0);
        let failure = ConnectFailure::Permanent("the cookies differ".into());
        let commands = m.connect_failed(0, 0, failure, 10);
        assert_eq!(
            commands,
            vec![MemberCommand::GiveUp { member: 0, reason: "the cookies differ".into() }]
        );
        assert!(m.given_up(0, 10));
    }
}
