//! Limits on failed sign-ins: per user name and per client address, checked before the slow
//! hash runs.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::clock::Clock;

/// How many failures a key may have in a row, and how fast it earns one back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) burst: u32,
    pub(crate) every: Duration,
}

impl Rate {
    /// No limit: a zero burst or a zero interval.
    fn is_off(self) -> bool {
        self.burst == 0 || self.every.is_zero()
    }

    /// The time the whole burst takes to come back.
    fn window(self) -> Duration {
        self.every.saturating_mul(self.burst)
    }
}

/// Default: 10 failures for one user name, then one more every 6 seconds (10 a minute).
pub(crate) const PER_NAME: Rate = Rate {
    burst: 10,
    every: Duration::from_secs(6),
};

/// Default: 20 failures from one client address, then one more every 3 seconds.
pub(crate) const PER_ADDRESS: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(3),
};

/// Default: how many user names, and how many client addresses, are tracked at most.
pub(crate) const MAX_TRACKED: usize = 10_000;

/// Generic cell rate algorithm buckets: per key, the instant at which its failures will all
/// have been earned back (`tat`); a key whose `tat` is past holds no debt and is forgotten.
#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    tat: HashMap<K, Instant>,
    max_tracked: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: Rate, max_tracked: usize) -> Self {
        Self {
            rate,
            tat: HashMap::new(),
            max_tracked: max_tracked.max(1),
        }
    }

    /// Whether `key` has failed recently (owes anything).
    fn owes(&self, key: &K, now: Instant) -> bool {
        self.tat.get(key).is_some_and(|tat| *tat > now)
    }

    /// How long until `key` may fail once more; `None` if it may now.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        if self.rate.is_off() {
            return None;
        }
        let tat = (*self.tat.get(key)?).max(now);
        let next = tat + self.rate.every;
        let limit = now + self.rate.window();
        (next > limit).then(|| next - limit)
    }

    /// Counts one attempt as a failure, in advance.
    fn take(&mut self, key: &K, now: Instant) {
        if self.rate.is_off() {
            return;
        }
        if !self.tat.contains_key(key) && self.tat.len() >= self.max_tracked {
            self.tat.retain(|_, tat| *tat > now);
            if self.tat.len() >= self.max_tracked {
                // Every tracked key owes: forget the one that owes least.
                let least = self
                    .tat
                    .iter()
                    .min_by_key(|(_, tat)| **tat)
                    .map(|(k, _)| k.clone());
                if let Some(least) = least {
                    self.tat.remove(&least);
                }
            }
        }
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        self.tat.insert(key.clone(), tat + self.rate.every);
    }

    /// Gives back an attempt counted by [`take`](Self::take) that did not fail.
    fn give_back(&mut self, key: &K, now: Instant) {
        if self.rate.is_off() {
            return;
        }
        if let Some(tat) = self.tat.get_mut(key) {
            *tat = tat.checked_sub(self.rate.every).unwrap_or(now);
            if *tat <= now {
                self.tat.remove(key);
            }
        }
    }
}

/// The key of a client address: an IPv4 address, or the /64 network of an IPv6 one (one
/// host commonly holds a whole /64). IPv4-mapped IPv6 addresses are their IPv4 address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The failed sign-ins of a [`BasicAuth`](super::BasicAuth) and its clones.
#[derive(Debug)]
pub(crate) struct Failures {
    state: Mutex<State>,
    clock: Clock,
}

#[derive(Debug)]
struct State {
    /// By a keyed hash of the name: a client chooses the names, and their length must not
    /// decide the memory kept (collisions cannot be aimed at, the key being random).
    names: Buckets<u64>,
    addresses: Buckets<IpAddr>,
    name_keys: std::hash::RandomState,
}

/// An attempt let through to the slow hash, counted as a failure until
/// [`Failures::succeeded`] says otherwise.
#[derive(Debug)]
pub(crate) struct Attempt {
    name: Option<u64>,
    address: Option<IpAddr>,
}

impl Failures {
    pub(crate) fn new(per_name: Rate, per_address: Rate, max_tracked: usize, clock: Clock) -> Self {
        Self {
            state: Mutex::new(State {
                names: Buckets::new(per_name, max_tracked),
                addresses: Buckets::new(per_address, max_tracked),
                name_keys: std::hash::RandomState::new(),
            }),
            clock,
        }
    }

    pub(crate) fn per_name(&self) -> Rate {
        self.lock().names.rate
    }

    pub(crate) fn per_address(&self) -> Rate {
        self.lock().addresses.rate
    }

    pub(crate) fn max_tracked(&self) -> usize {
        self.lock().names.max_tracked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets an attempt for `name` from `address` through to the slow hash, counting it as a
    /// failure in advance, or says how long to wait.
    ///
    /// - An address with too many recent failures is refused, whatever the name.
    /// - A name with too many recent failures is refused from addresses that failed
    ///   recently (or when the address is unknown); an address without recent failures
    ///   may still try it, so that a flood against a name does not lock its user out.
    pub(crate) fn attempt(&self, name: &str, address: Option<IpAddr>) -> Result<Attempt, Duration> {
        let now = self.clock.now();
        let address = address.map(address_key);
        let mut state = self.lock();
        if let Some(ip) = &address
            && let Some(wait) = state.addresses.wait(ip, now)
        {
            return Err(wait);
        }
        let clean = address
            .as_ref()
            .is_some_and(|ip| !state.addresses.owes(ip, now));
        let name_key = std::hash::BuildHasher::hash_one(&state.name_keys, name);
        let mut counted_name = None;
        match state.names.wait(&name_key, now) {
            Some(wait) if !clean => return Err(wait),
            // Past the name's limit, from a clean address: let through, counted for the
            // address only.
            Some(_) => {}
            None => {
                state.names.take(&name_key, now);
                counted_name = Some(name_key);
            }
        }
        if let Some(ip) = &address {
            state.addresses.take(ip, now);
        }
        Ok(Attempt {
            name: counted_name,
            address,
        })
    }

    /// The attempt succeeded: it was no failure.
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(name) = &attempt.name {
            state.names.give_back(name, now);
        }
        if let Some(ip) = &attempt.address {
            state.addresses.give_back(ip, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    fn rate(burst: u32, secs: u64) -> Rate {
        Rate {
            burst,
            every: Duration::from_secs(secs),
        }
    }

    #[test]
    fn an_address_over_its_limit_waits_then_earns_attempts_back() {
        let clock = Clock::stopped();
        let failures = Failures::new(rate(0, 0), rate(3, 10), 100, clock.clone());
        for i in 0..3 {
            failures.attempt(&format!("u{i}"), Some(A)).unwrap();
        }
        let wait = failures.attempt("u9", Some(A)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert!(failures.attempt("u9", Some(B)).is_ok(), "another address");
        clock.advance(Duration::from_secs(4));
        assert_eq!(
            failures.attempt("u9", Some(A)).unwrap_err(),
            Duration::from_secs(6)
        );
        clock.advance(Duration::from_secs(6));
        failures.attempt("u9", Some(A)).unwrap();
        assert!(failures.attempt("u9", Some(A)).is_err());
    }

    #[test]
    fn successes_are_given_back() {
        let failures = Failures::new(rate(2, 10), rate(2, 10), 100, Clock::stopped());
        for _ in 0..10 {
            let attempt = failures.attempt("Alice", Some(A)).unwrap();
            failures.succeeded(attempt);
        }
        failures.attempt("Alice", Some(A)).unwrap();
        failures.attempt("Alice", Some(A)).unwrap();
        assert!(failures.attempt("Alice", Some(A)).is_err());
    }

    #[test]
    fn a_name_over_its_limit_is_refused_to_failing_addresses_only() {
        let failures = Failures::new(rate(2, 60), rate(100, 1), 100, Clock::stopped());
        // The attacker, from A.
        failures.attempt("Alice", Some(A)).unwrap();
        failures.attempt("Alice", Some(A)).unwrap();
        assert!(failures.attempt("Alice", Some(A)).is_err());
        assert!(failures.attempt("Alice", None).is_err(), "unknown address");
        // Alice, from B, where nothing failed: she may still try.
        let alice = failures.attempt("Alice", Some(B)).unwrap();
        failures.succeeded(alice);
        failures.attempt("Alice", Some(B)).unwrap();
        // Once B failed, the name's limit holds for it too.
        assert!(failures.attempt("Alice", Some(B)).is_err());
        // Other names are not affected.
        assert!(failures.attempt("Bob", Some(A)).is_ok());
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let clock = Clock::stopped();
        let failures = Failures::new(rate(1, 60), rate(0, 0), 3, clock.clone());
        for i in 0..10 {
            failures.attempt(&format!("u{i}"), None).unwrap();
            clock.advance(Duration::from_secs(1));
        }
        assert!(failures.lock().names.tat.len() <= 3);
        assert!(failures.attempt("u9", None).is_err(), "the newest is kept");
    }

    #[test]
    fn ipv6_hosts_count_as_their_64() {
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let other: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(other));
        assert_ne!(address_key(one), address_key(elsewhere));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(address_key(mapped), A);
    }
}
