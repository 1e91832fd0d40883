//! File descriptors when they run out: the public listeners shed new connections instead of
//! failing their accepts.
//!
//! A process out of descriptors (`EMFILE`) cannot accept, and the connection waiting in the
//! backlog stays there: its client hangs until it times out, and the listener wakes up again
//! at once for the same connection. So the relay keeps one spare descriptor: when an accept
//! fails for want of descriptors, it closes the spare, accepts the waiting connection, resets
//! it (the client learns at once), and opens the spare again. One warning per streak says
//! that it happens; the next normal accept ends the streak.
//!
//! At start the soft limit is raised to the hard one, so that the relay can use what the
//! system allows it without an `ulimit` in every unit file.

use std::fs::File;
use std::io;
use std::time::Duration;
use tokio::net::TcpListener;

/// One accept loop's spare descriptor, and whether that loop is shedding now.
pub(crate) struct FdReserve {
    spare: Option<File>,
    shedding: bool,
}

impl FdReserve {
    /// Opens the spare (`/dev/null`).
    pub(crate) fn new() -> FdReserve {
        FdReserve {
            spare: File::open("/dev/null").ok(),
            shedding: false,
        }
    }

    /// Whether `error` is an accept failing for want of descriptors.
    pub(crate) fn is_exhaustion(error: &io::Error) -> bool {
        matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
    }

    /// After an accept failed with `EMFILE`/`ENFILE`: frees the spare, accepts the waiting
    /// connection and resets it, and takes the spare back. Returns whether one was shed.
    pub(crate) async fn shed(&mut self, listener: &TcpListener, tls: bool) -> bool {
        if !std::mem::replace(&mut self.shedding, true) {
            tracing::warn!(
                tls,
                "out of file descriptors: new connections are reset until some close"
            );
        }
        drop(self.spare.take());
        // The waiting connection is ready now; don't wait for another.
        let shed = match tokio::time::timeout(Duration::from_millis(1), listener.accept()).await {
            Ok(Ok((stream, _))) => {
                let _ = stream.set_zero_linger();
                true
            }
            _ => false,
        };
        self.spare = File::open("/dev/null").ok();
        shed
    }

    /// A normal accept: ends a shedding streak.
    pub(crate) fn accepted(&mut self) {
        if std::mem::replace(&mut self.shedding, false) {
            tracing::info!("file descriptors available again: accepting normally");
        }
    }
}

/// "Too many open files" (the process's limit) and "file table overflow" (the system's), the
/// same numbers on every Unix.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Raises the soft limit on open files to the hard limit; returns the limit in force.
pub(crate) fn raise_file_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return Some(hard);
        }
        Some(soft)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
