//! The clock of the credential and token caches: the system's, which unit tests can stop
//! and move forward instead of sleeping.

use std::time::{Instant, SystemTime};

/// Now, as the caches see it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Clock {
    /// Tests: the instants this clock stopped at, and how far it was moved since.
    #[cfg(test)]
    stopped: Option<std::sync::Arc<std::sync::Mutex<(Instant, SystemTime)>>>,
}

impl Clock {
    /// A monotonic instant, for time-to-live and rate limits.
    pub(crate) fn now(&self) -> Instant {
        #[cfg(test)]
        if let Some(stopped) = &self.stopped {
            return stopped.lock().unwrap_or_else(|e| e.into_inner()).0;
        }
        Instant::now()
    }

    /// The wall-clock time, for a token's `exp`.
    pub(crate) fn system_now(&self) -> SystemTime {
        #[cfg(test)]
        if let Some(stopped) = &self.stopped {
            return stopped.lock().unwrap_or_else(|e| e.into_inner()).1;
        }
        SystemTime::now()
    }

    /// A clock stopped now, that moves only with [`advance`](Self::advance).
    #[cfg(test)]
    pub(crate) fn stopped() -> Self {
        Self {
            stopped: Some(std::sync::Arc::new(std::sync::Mutex::new((
                Instant::now(),
                SystemTime::now(),
            )))),
        }
    }

    /// Moves a [`stopped`](Self::stopped) clock (and its clones) forward.
    #[cfg(test)]
    pub(crate) fn advance(&self, by: std::time::Duration) {
        let stopped = self
            .stopped
            .as_ref()
            .expect("only a stopped clock is moved");
        let mut at = stopped.lock().unwrap_or_else(|e| e.into_inner());
        at.0 += by;
        at.1 += by;
    }
}
