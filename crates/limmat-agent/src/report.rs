//! What the agent tells its user, and the state it shows: one line when the device is online
//! (with its public URL), one warning per failure streak instead of one per pool slot per
//! attempt, one line when it recovers, and a warning when a relay accepted the connection but
//! stays silent where it should answer at once.
//!
//! The pool's slots fail and succeed independently, so the streak lives in the shared
//! [`AgentStatus`]: the first failure after being online (or at start) is a warning, the
//! following ones debug lines until some slot is online again. A new reason in the streak
//! (connection refused, then `401`) is warned too, once: it is news.

use std::fmt::Display;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::handshake::Target;
use crate::status::{AgentState, AgentStatus};

/// A PTTH device is not acknowledged until a client comes (the relay holds its request), but
/// the relay refuses a bad key or a full domain at once: silence this long means registered.
pub(crate) const PTTH_ONLINE_AFTER: Duration = Duration::from_secs(1);
/// The mux `101` comes at once (5.1): silence this long means something holds the connection.
pub(crate) const MUX_SILENT_AFTER: Duration = Duration::from_secs(3);

/// Distinct failure reasons warned about per streak; slots that alternate between two reasons
/// (refused, then reset) warn twice, not every time.
const WARNED_REASONS: usize = 4;

/// The public URL of `target` in path form: `http://relay:port/<domain>/`, without the port
/// when it is the scheme's default.
pub(crate) fn public_url(target: &Target) -> String {
    let scheme = if target.tls { "https" } else { "http" };
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let default = if target.tls { 443 } else { 80 };
    match target.port {
        port if port == default => format!("{scheme}://{host}/{}/", target.domain),
        port => format!("{scheme}://{host}:{port}/{}/", target.domain),
    }
}

/// A connection of `transport` (`mux` or `ptth`) to `target` is registered.
pub(crate) fn online(status: &watch::Sender<AgentStatus>, target: &Target, transport: &str) {
    let mut was = AgentState::Online;
    let mut streak = 0;
    status.send_modify(|s| {
        was = s.state;
        streak = s.failures_in_streak;
        s.state = AgentState::Online;
        s.failures_in_streak = 0;
        s.silent_warned = false;
        s.warned.clear();
    });
    if was == AgentState::Online {
        return;
    }
    let s = status.borrow().clone();
    let connections = match transport {
        "mux" => format!("mux, {}", plural(s.mux, "connection")),
        _ => format!("ptth, {}", plural(s.waiting.max(1), "waiting connection")),
    };
    if streak > 0 {
        info!(relay = %target, failures = streak, "recovered after {}", plural(streak as usize, "failure"));
    }
    info!(relay = %target, "online: {} ({connections})", public_url(target));
}

/// An attempt failed: a warning for a reason not yet warned about in this streak, else a
/// debug line.
pub(crate) fn failed(
    status: &watch::Sender<AgentStatus>,
    target: &Target,
    next_in: Duration,
    err: &dyn Display,
) {
    let reason = err.to_string();
    let mut news = false;
    status.send_modify(|s| {
        s.failures += 1;
        s.failures_in_streak += 1;
        s.state = AgentState::Failing;
        news = s.warned.len() < WARNED_REASONS && !s.warned.contains(&reason);
        if news {
            s.warned.push(reason.clone());
        }
        s.last_error = Some(reason.clone());
    });
    let next_in_ms = next_in.as_millis();
    if news {
        warn!(relay = %target, next_in_ms, "attempt failed: {reason} (retrying; repeats are logged at debug level until it recovers)");
    } else {
        debug!(relay = %target, next_in_ms, "attempt failed: {reason}");
    }
}

/// A relay accepted the connection and has not answered the mux handshake in `after`.
pub(crate) fn silent(status: &watch::Sender<AgentStatus>, target: &Target, after: Duration) {
    let mut first = false;
    status.send_modify(|s| first = !std::mem::replace(&mut s.silent_warned, true));
    if first {
        warn!(
            relay = %target,
            "waiting for the relay to answer: it accepted the connection {}s ago and said nothing (a firewall or proxy holding the connection, or not a Limmat relay?)",
            after.as_secs()
        );
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, tls: bool) -> Target {
        Target {
            host: host.into(),
            port,
            tls,
            domain: "dev".into(),
        }
    }

    #[test]
    fn urls_leave_out_default_ports() {
        assert_eq!(public_url(&target("relay", 80, false)), "http://relay/dev/");
        assert_eq!(
            public_url(&target("relay", 443, true)),
            "https://relay/dev/"
        );
        assert_eq!(
            public_url(&target("::1", 8080, false)),
            "http://[::1]:8080/dev/"
        );
    }

    #[test]
    fn a_streak_counts_until_online() {
        let status = watch::Sender::new(AgentStatus::default());
        let t = target("relay", 80, false);
        for _ in 0..3 {
            failed(&status, &t, Duration::ZERO, &"refused");
        }
        let s = status.borrow().clone();
        assert_eq!(
            (s.state, s.failures_in_streak, s.failures),
            (AgentState::Failing, 3, 3)
        );
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        failed(&status, &t, Duration::ZERO, &"reset");
        failed(&status, &t, Duration::ZERO, &"refused");
        assert_eq!(status.borrow().warned, ["refused", "reset"]);
        online(&status, &t, "mux");
        let s = status.borrow().clone();
        assert_eq!(
            (s.state, s.failures_in_streak, s.failures),
            (AgentState::Online, 0, 5)
        );
        assert!(s.warned.is_empty());
    }
}
