//! The tokio runtime a command runs on: its layout (`--runtime`) and its thread count
//! (`--worker-threads`), chosen per command by measurement (docs/benchmarks.md, "Relay and
//! tunnel"): a relay or tunnel that shares its cores with other processes spends less CPU per
//! request when one connection's tasks stay on one thread than when tokio's work-stealing
//! workers hand them to each other.
//!
//! - `multi-thread`: tokio's work-stealing pool of `worker_threads` workers.
//! - `current-thread`: everything on the thread that runs the command.
//! - `per-core` (the relay only): `worker_threads` current-thread runtimes, each on its own
//!   thread with its own `SO_REUSEPORT` accept socket (`limmat_relay`'s `accept_runtimes`).

use std::fmt;
use std::str::FromStr;

/// How the runtime spreads tasks over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// tokio's work-stealing pool.
    MultiThread,
    /// One thread.
    CurrentThread,
    /// One current-thread runtime per worker thread, each accepting its own connections.
    PerCore,
}

impl FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "multi-thread" => Ok(Layout::MultiThread),
            "current-thread" => Ok(Layout::CurrentThread),
            "per-core" => Ok(Layout::PerCore),
            _ => Err(format!(
                "{s:?} is not a runtime: multi-thread, current-thread or per-core"
            )),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::MultiThread => "multi-thread",
            Layout::CurrentThread => "current-thread",
            Layout::PerCore => "per-core",
        })
    }
}

/// A layout and its thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The layout.
    pub layout: Layout,
    /// Workers of `multi-thread`, runtimes of `per-core`; 0 = one per core.
    pub threads: usize,
}

impl Choice {
    /// Threads this choice runs on: `threads`, or one per core.
    pub fn thread_count(self) -> usize {
        match (self.layout, self.threads) {
            (Layout::CurrentThread, _) => 1,
            (_, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            (_, n) => n,
        }
    }

    /// The runtimes `per-core` starts besides the one this builds.
    pub fn extra_runtimes(self) -> usize {
        match self.layout {
            Layout::PerCore => self.thread_count() - 1,
            _ => 0,
        }
    }

    /// The runtime the command runs on: for `per-core`, the first of its runtimes (a
    /// current-thread one; the relay starts the others).
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.layout {
            Layout::MultiThread => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if self.threads > 0 {
                    b.worker_threads(self.threads);
                }
                b
            }
            Layout::CurrentThread | Layout::PerCore => {
                tokio::runtime::Builder::new_current_thread()
            }
        };
        builder.enable_all().build()
    }
}

/// A `--worker-threads` value: a count, 0 for one per core.
pub fn threads(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a number of threads such as 0 (one per core) or 2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_and_print_alike() {
        for name in ["multi-thread", "current-thread", "per-core"] {
            assert_eq!(name.parse::<Layout>().unwrap().to_string(), name);
        }
        assert!("single".parse::<Layout>().unwrap_err().contains("per-core"));
    }

    #[test]
    fn per_core_starts_the_other_runtimes() {
        let c = |layout, threads| Choice { layout, threads };
        assert_eq!(c(Layout::PerCore, 4).extra_runtimes(), 3);
        assert_eq!(c(Layout::PerCore, 1).extra_runtimes(), 0);
        assert_eq!(c(Layout::MultiThread, 4).extra_runtimes(), 0);
        assert_eq!(c(Layout::CurrentThread, 4).thread_count(), 1);
    }
}
