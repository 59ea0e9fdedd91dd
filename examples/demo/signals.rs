//! The signals that stop a server, for the demo and the bench server alike.

/// The signals that stop the server: Ctrl-C (SIGINT) and, on unix, SIGTERM. Installed once,
/// before start-up, so that none is lost between two waits.
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal: its name, and the exit status that says a process died of it.
    pub(crate) async fn next(&mut self) -> (&'static str, i32) {
        #[cfg(unix)]
        tokio::select! {
            Some(()) = self.interrupt.recv() => ("SIGINT", 130),
            Some(()) = self.terminate.recv() => ("SIGTERM", 143),
            else => std::future::pending().await,
        }
        #[cfg(not(unix))]
        match tokio::signal::ctrl_c().await {
            Ok(()) => ("Ctrl-C", 130),
            Err(_) => std::future::pending().await,
        }
    }
}
