//! The live set: which members count for ownership right now (spec 7.2), computed purely from
//! what chitchat reports, so the rules are tested without a network.
//!
//! A member counts while chitchat reports it live, its document is valid and not draining, and
//! it has been live without a break for `join_delay`; the node itself always counts unless it
//! drains. Two live incarnations of one `node_id`:
//! - at the same gossip address, the higher generation is a restart and replaces the other;
//! - at different addresses, it is a **collision**: the incarnation that started first (lowest
//!   generation) keeps the id and every node, the newcomer included, keeps the newcomer out of
//!   the live set. The newcomer logs an error, answers `503` on `health` and owns nothing
//!   until the other incarnation is gone. (It does not refuse to start: a collision can also
//!   appear later, when a partition heals, and one rule covers both.)

use super::document::Member;
use super::owner;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One incarnation as this node observes it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub node_id: Arc<str>,
    pub generation: u64,
    pub gossip: SocketAddr,
    pub doc: Result<Member, &'static str>,
    /// Since when chitchat reports it live without a break; `None`: not live.
    pub live_since: Option<Instant>,
    /// When its heartbeat last advanced.
    pub last_heard: Option<Instant>,
    pub is_self: bool,
}

/// What a node's view says about one incarnation (`GET /limmat/cluster/1/members`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Counts for ownership.
    Live,
    /// Live for less than `join_delay`.
    Joining,
    /// Publishes `draining = true`.
    Draining,
    /// Loses a `node_id` collision.
    Conflict,
    /// An older generation of a restarted node.
    Replaced,
    /// Its document is missing or malformed.
    Invalid,
    /// The failure detector reports it dead.
    Dead,
}

/// One row of the members view.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub node_id: Arc<str>,
    pub generation: u64,
    pub gossip: SocketAddr,
    pub state: State,
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Milliseconds since its heartbeat last advanced (0 for this node).
    pub last_heard_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
    #[serde(flatten)]
    pub member: Option<Member>,
}

/// The members that count for ownership, sorted by `node_id`. Published through a
/// `tokio::sync::watch`, so readers take an `Arc` and hold no lock across an await.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSet {
    pub local: Member,
    members: Vec<Member>,
    /// This incarnation counts (a collision's loser shares its id with a member but does not).
    self_counts: bool,
}

impl LiveSet {
    /// A standalone node: itself only, owning every domain.
    pub fn standalone(local: Member) -> Self {
        Self {
            members: vec![local.clone()],
            local,
            self_counts: true,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The owner of `domain` (7.3); `None` when nobody counts (a lone node that drains).
    pub fn owner(&self, domain: &str) -> Option<&Member> {
        owner::owner(self.members.iter().map(|m| &*m.node_id), domain).map(|i| &self.members[i])
    }

    /// This node owns `domain`.
    pub fn owns(&self, domain: &str) -> bool {
        self.self_counts
            && self
                .owner(domain)
                .is_some_and(|m| m.node_id == self.local.node_id)
    }

    /// This node counts for ownership (not draining, not losing a collision).
    pub fn counts_self(&self) -> bool {
        self.self_counts
    }

    pub fn get(&self, node_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| &*m.node_id == node_id)
    }
}

/// Applies the rules above to everything observed (`observed` includes this node).
pub fn evaluate(
    local: &Member,
    observed: &[Observed],
    now: Instant,
    join_delay: Duration,
) -> (LiveSet, Vec<MemberView>) {
    let valid_live = |o: &Observed| o.live_since.is_some() && o.doc.is_ok();
    let mut views = Vec::with_capacity(observed.len());
    let mut members = Vec::new();
    let mut self_counts = false;
    for o in observed {
        let rivals = observed
            .iter()
            .filter(|r| valid_live(r) && r.node_id == o.node_id && !std::ptr::eq(*r, o));
        let mut state = match &o.doc {
            _ if o.live_since.is_none() => State::Dead,
            Err(_) => State::Invalid,
            Ok(_) => State::Live,
        };
        for r in rivals {
            if state != State::Live {
                break;
            }
            if r.gossip == o.gossip {
                if r.generation > o.generation {
                    state = State::Replaced;
                }
            } else if (r.generation, r.gossip) < (o.generation, o.gossip)
                // A rival that is itself replaced at its address does not win.
                && !observed.iter().any(|x| {
                    valid_live(x) && x.gossip == r.gossip && x.generation > r.generation
                })
            {
                state = State::Conflict;
            }
        }
        if state == State::Live {
            let doc = o.doc.as_ref().ok();
            if doc.is_some_and(|d| d.draining) {
                state = State::Draining;
            } else if !o.is_self
                && o.live_since
                    .is_some_and(|since| now.saturating_duration_since(since) < join_delay)
            {
                state = State::Joining;
            }
        }
        if state == State::Live
            && let Ok(doc) = &o.doc
        {
            members.push(doc.clone());
            self_counts |= o.is_self;
        }
        views.push(MemberView {
            node_id: o.node_id.clone(),
            generation: o.generation,
            gossip: o.gossip,
            state,
            is_self: o.is_self,
            last_heard_ms: if o.is_self {
                Some(0)
            } else {
                o.last_heard
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64)
            },
            problem: o.doc.as_ref().err().copied(),
            member: o.doc.as_ref().ok().cloned(),
        });
    }
    members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    members.dedup_by(|a, b| a.node_id == b.node_id);
    views.sort_by(|a, b| (&a.node_id, a.generation).cmp(&(&b.node_id, b.generation)));
    (
        LiveSet {
            local: local.clone(),
            members,
            self_counts,
        },
        views,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            node_id: id.into(),
            public_host: format!("{id}.example.com"),
            public_http_port: Some(80),
            public_https_port: Some(443),
            internal: "10.0.0.1:7000".parse().unwrap(),
            draining: false,
        }
    }

    fn seen(id: &str, generation: u64, addr: &str, since: Option<Instant>) -> Observed {
        Observed {
            node_id: id.into(),
            generation,
            gossip: addr.parse().unwrap(),
            doc: Ok(member(id)),
            live_since: since,
            last_heard: since,
            is_self: false,
        }
    }

    fn ids(set: &LiveSet) -> Vec<&str> {
        set.members().iter().map(|m| &*m.node_id).collect()
    }

    #[test]
    fn join_delay_draining_dead_and_invalid() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut me = seen("a", 1, "10.0.0.1:1", Some(later));
        me.is_self = true;
        let mut draining = seen("d", 1, "10.0.0.4:1", Some(t0));
        draining.doc.as_mut().unwrap().draining = true;
        let mut invalid = seen("e", 1, "10.0.0.5:1", Some(t0));
        invalid.doc = Err("internal");
        let observed = [
            me,
            seen("b", 1, "10.0.0.2:1", Some(t0)),
            seen(
                "c",
                1,
                "10.0.0.3:1",
                Some(later - Duration::from_millis(500)),
            ),
            draining,
            invalid,
            seen("f", 1, "10.0.0.6:1", None),
        ];
        let (set, views) = evaluate(&member("a"), &observed, later, Duration::from_secs(1));
        // The node counts itself at once; c is still joining.
        assert_eq!(ids(&set), ["a", "b"]);
        let states: Vec<State> = views.iter().map(|v| v.state).collect();
        use State::*;
        assert_eq!(states, [Live, Live, Joining, Draining, Invalid, Dead]);
        assert!(set.counts_self());
        assert_eq!(
            set.owns("dom"),
            set.owner("dom").is_some_and(|m| &*m.node_id == "a")
        );
        let (set, _) = evaluate(
            &member("a"),
            &observed,
            later + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(ids(&set), ["a", "b", "c"]);
    }

    #[test]
    fn a_draining_node_owns_nothing() {
        let mut me = seen("a", 1, "10.0.0.1:1", Some(Instant::now()));
        me.is_self = true;
        me.doc.as_mut().unwrap().draining = true;
        let t = Instant::now();
        let (set, _) = evaluate(&member("a"), &[me.clone()], t, Duration::ZERO);
        assert!(!set.counts_self());
        assert_eq!(set.owner("dom"), None);
        let (set, _) = evaluate(
            &member("a"),
            &[me, seen("b", 1, "10.0.0.2:1", Some(t))],
            t,
            Duration::ZERO,
        );
        assert_eq!(ids(&set), ["b"]);
        assert!(!set.owns("dom"));
    }

    #[test]
    fn restart_replaces_and_collision_keeps_the_first() {
        let t = Instant::now();
        // A restart at the same address: the new generation wins.
        let observed = [
            seen("b", 1, "10.0.0.2:1", Some(t)),
            seen("b", 2, "10.0.0.2:1", Some(t)),
        ];
        let (set, views) = evaluate(&member("a"), &observed, t, Duration::ZERO);
        assert_eq!(ids(&set), ["b"]);
        assert_eq!(views[0].state, State::Replaced);
        assert_eq!(views[1].state, State::Live);
        // A collision: the first to start keeps the id, in everyone's view, its own included.
        let mut newcomer = seen("b", 9, "10.0.0.9:1", Some(t));
        newcomer.is_self = true;
        let observed = [seen("b", 3, "10.0.0.2:1", Some(t)), newcomer];
        let (set, views) = evaluate(&member("b"), &observed, t, Duration::ZERO);
        assert_eq!(views[1].state, State::Conflict);
        assert!(views[1].is_self);
        assert_eq!(ids(&set), ["b"]);
        assert!(!set.counts_self() && !set.owns("dom"));
        // Once the first one is dead, the newcomer counts.
        let observed = [seen("b", 3, "10.0.0.2:1", None), observed[1].clone()];
        let (_, views) = evaluate(&member("b"), &observed, t, Duration::ZERO);
        assert_eq!(views[1].state, State::Live);
    }
}
