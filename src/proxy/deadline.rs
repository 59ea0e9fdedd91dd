//! Deadlines from configured durations, without overflow.
//!
//! `Instant::now() + timeout` panics when the sum cannot be represented, which a user gets
//! by configuring `Duration::MAX` to mean "no limit". Such deadlines are taken as about
//! thirty years from now instead (as tokio's own far-future instant): a timer that never
//! fires, and no panic on the request path.

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: the stand-in for a deadline too far to represent.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + timeout`, or about thirty years from now when that cannot be represented.
pub(crate) fn after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout.min(FAR))
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_are_far_but_representable() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(after(now, Duration::MAX), now + FAR);
        assert_eq!(after(now, Duration::from_secs(u64::MAX / 2)), now + FAR);
        assert_eq!(after(now, Duration::ZERO), now);
    }
}
