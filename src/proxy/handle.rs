//! [`ProxyHandle`]: the run-time switchable target.
//!
//! The proxy is disabled until a target is set. A [`ProxyHandle`] is cheap to clone and
//! changes the target from any thread; the request path reads it without taking a lock
//! (an [`ArcSwapOption`]), and a request keeps the target it started with even if the
//! target changes while it is in flight.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use arc_swap::ArcSwapOption;

use crate::{error::ConfigError, target::Target};

/// Changes the proxy's target at run time; cheap to clone, usable from any thread.
///
/// Create one, keep a clone and give it to [`ProxyLayer::handle`](crate::ProxyLayer::handle):
/// all clones, and every service built from layers given one of them, see the same target. Reads on the request path are lock-free, and a request keeps the
/// target it started with even if the target changes while it is in flight.
///
/// # Example
///
/// ```
/// use tower_identity_proxy::ProxyHandle;
///
/// let handle = ProxyHandle::new();
/// assert!(handle.target().is_none()); // disabled by default
///
/// handle.set_target(Some("http://127.0.0.1:1991/base"))?;
/// assert_eq!(handle.target().unwrap().as_str(), "http://127.0.0.1:1991/base");
///
/// // An invalid URL is refused and the previous target stays in force.
/// assert!(handle.set_target(Some("ftp://example.com")).is_err());
/// assert!(handle.target().is_some());
///
/// handle.set_target(None)?; // disabled again
/// assert!(handle.target().is_none());
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ProxyHandle {
    target: Arc<ArcSwapOption<Target>>,
    /// `false` while a state store has not synchronised the target yet (`503`).
    ready: Arc<AtomicBool>,
}

impl Default for ProxyHandle {
    fn default() -> Self {
        Self {
            target: Arc::default(),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl ProxyHandle {
    /// A handle with no target: the proxy is disabled.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle whose target is `target`: the proxy is enabled.
    pub fn with_target(target: Target) -> Self {
        let handle = Self::new();
        handle.target.store(Some(Arc::new(target)));
        handle
    }

    /// Sets the target, or disables the proxy with `None`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError::InvalidTarget`] when the URL is invalid (see [`Target::parse`]);
    /// the previous target then stays in force.
    pub fn set_target(&self, url: Option<&str>) -> Result<(), ConfigError> {
        let target = url.map(Target::parse).transpose()?;
        self.set(target);
        Ok(())
    }

    /// Sets an already validated target, or disables the proxy with `None`.
    pub fn set(&self, target: Option<Target>) {
        let previous = self.target.swap(target.map(Arc::new));
        tracing::info!(
            target: "tower_identity_proxy",
            from = previous.as_deref().map(Target::as_str),
            to = self.target.load().as_deref().map(Target::as_str),
            "proxy target changed"
        );
    }

    /// Disables the proxy: requests get `501 The proxy is disabled.`
    pub fn disable(&self) {
        self.set(None);
    }

    /// The current target, `None` when the proxy is disabled.
    pub fn target(&self) -> Option<Arc<Target>> {
        self.target.load_full()
    }

    /// Whether `target` is the target in force (the same one, not an equal one set again).
    pub(crate) fn is_current(&self, target: &Arc<Target>) -> bool {
        self.target
            .load()
            .as_ref()
            .is_some_and(|now| Arc::ptr_eq(now, target))
    }

    /// Whether a target is set.
    pub fn is_enabled(&self) -> bool {
        self.target.load().is_some()
    }

    /// Whether the target is known: always, unless a [state store](crate::state) has not
    /// synchronised it yet, in which case requests get `503 The proxy is not ready.`
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

impl fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("target", &self.target.load().as_deref().map(Target::as_str))
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_keeps_previous_target_on_error() {
        let h = ProxyHandle::new();
        assert!(!h.is_enabled());
        h.set_target(Some("http://a:1")).unwrap();
        assert!(h.is_enabled());
        assert!(h.set_target(Some("nope")).is_err());
        assert_eq!(h.target().unwrap().as_str(), "http://a:1");
        assert!(ProxyHandle::with_target(Target::parse("http://a:1").unwrap()).is_enabled());
        let clone = h.clone();
        clone.set_target(None).unwrap();
        assert!(!h.is_enabled());
        h.set_target(Some("http://a:1")).unwrap();
        clone.disable();
        assert!(!h.is_enabled());
        assert!(h.target().is_none());
    }
}
