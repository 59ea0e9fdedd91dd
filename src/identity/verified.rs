//! The verified-credential cache of [`BasicAuth`](super::BasicAuth): user names and passwords
//! whose slow hash was checked a moment ago, recognised by a keyed fast hash.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aws_lc_rs::{
    constant_time::verify_slices_are_equal,
    hmac::{self, HMAC_SHA256},
    rand::SystemRandom,
};

use super::{Identity, clock::Clock};

/// How long a verified password is recognised without the slow hash, by default.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// How many users' verified passwords are kept, by default.
pub(crate) const DEFAULT_CAPACITY: usize = 1024;

/// Users whose password was verified less than a TTL ago, each with the HMAC-SHA256 of
/// their name and password under a key drawn at random when the cache is made (never
/// stored, never the same in two processes). Neither the password nor its slow hash is
/// kept: the tag is a lookup check, not a key, and is compared in constant time.
///
/// At most one entry per user (a user has one password), at most `capacity` entries.
pub(crate) struct VerifiedCredentials {
    key: hmac::Key,
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<Arc<str>, Entry>>,
    clock: Clock,
}

struct Entry {
    tag: [u8; 32],
    identity: Identity,
    verified_at: Instant,
}

impl VerifiedCredentials {
    /// A cache keeping at most `capacity` users for `ttl` each; `None` when either is zero
    /// (no cache), or when no random key can be drawn.
    pub(crate) fn new(ttl: Duration, capacity: usize, clock: Clock) -> Option<Self> {
        if ttl.is_zero() || capacity == 0 {
            return None;
        }
        let key = hmac::Key::generate(HMAC_SHA256, &SystemRandom::new()).ok()?;
        Some(Self {
            key,
            ttl,
            capacity,
            entries: RwLock::new(HashMap::new()),
            clock,
        })
    }

    fn tag(&self, name: &str, password: &str) -> [u8; 32] {
        let mut mac = hmac::Context::with_key(&self.key);
        // Length-prefixed: `a` + `bc` and `ab` + `c` differ.
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(password.as_bytes());
        let mut tag = [0; 32];
        tag.copy_from_slice(mac.sign().as_ref());
        tag
    }

    /// The identity of `name` if `password` is the one verified for it less than a TTL
    /// ago; `None` otherwise (never for another password).
    pub(crate) fn get(&self, name: &str, password: &str) -> Option<Identity> {
        let tag = self.tag(name, password);
        let now = self.clock.now();
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(name)?;
        if now.saturating_duration_since(entry.verified_at) >= self.ttl {
            return None;
        }
        verify_slices_are_equal(&entry.tag, &tag).ok()?;
        Some(entry.identity.clone())
    }

    /// Remembers that `password` is `name`'s, for `identity`. When full, expired entries go
    /// first, then the oldest.
    ///
    /// The caller makes sure the user has not changed since the password was checked: see
    /// `CredentialStore::while_current`.
    pub(crate) fn insert(&self, name: &str, password: &str, identity: Identity) {
        let tag = self.tag(name, password);
        let now = self.clock.now();
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(name) {
            entries.retain(|_, e| now.saturating_duration_since(e.verified_at) < self.ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.verified_at)
                    .map(|(name, _)| Arc::clone(name));
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            name.into(),
            Entry {
                tag,
                identity,
                verified_at: now,
            },
        );
    }

    /// Forgets `name`'s password.
    pub(crate) fn invalidate(&self, name: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.remove(name);
    }

    /// How many entries are kept, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl std::fmt::Debug for VerifiedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCredentials")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::new("Alice", ["ROLE_USER"])
    }

    #[test]
    fn only_the_verified_password_and_only_until_the_ttl() {
        let clock = Clock::stopped();
        let cache = VerifiedCredentials::new(Duration::from_secs(60), 8, clock.clone()).unwrap();
        assert_eq!(cache.get("Alice", "pw"), None);
        cache.insert("Alice", "pw", alice());
        assert_eq!(cache.get("Alice", "pw"), Some(alice()));
        assert_eq!(cache.get("Alice", "pw2"), None, "another password");
        assert_eq!(cache.get("Alice", ""), None);
        assert_eq!(
            cache.get("Alicep", "w"),
            None,
            "the name is part of the tag"
        );
        assert_eq!(cache.get("alice", "pw"), None);
        clock.advance(Duration::from_secs(59));
        assert_eq!(cache.get("Alice", "pw"), Some(alice()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get("Alice", "pw"), None, "expired");
        cache.insert("Alice", "pw", alice());
        assert_eq!(cache.get("Alice", "pw"), Some(alice()));
        cache.invalidate("Alice");
        assert_eq!(cache.get("Alice", "pw"), None, "invalidated");
    }

    #[test]
    fn the_bound_holds_expired_entries_then_the_oldest_go_first() {
        let clock = Clock::stopped();
        let cache = VerifiedCredentials::new(Duration::from_secs(60), 3, clock.clone()).unwrap();
        for name in ["a", "b", "c"] {
            cache.insert(name, "pw", Identity::new(name, ["R"]));
            clock.advance(Duration::from_secs(1));
        }
        cache.insert("d", "pw", Identity::new("d", ["R"]));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("a", "pw").is_none(), "the oldest went");
        for name in ["b", "c", "d"] {
            assert!(cache.get(name, "pw").is_some(), "{name}");
        }
        // Replacing an entry takes no room.
        cache.insert("d", "pw2", Identity::new("d", ["R"]));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b", "pw").is_some());
        // Expired ones go before any live one.
        clock.advance(Duration::from_secs(59));
        cache.insert("e", "pw", Identity::new("e", ["R"]));
        cache.insert("f", "pw", Identity::new("f", ["R"]));
        assert!(cache.len() <= 3);
        assert!(cache.get("d", "pw2").is_some(), "still live");
        assert!(cache.get("e", "pw").is_some());
        assert!(cache.get("f", "pw").is_some());
    }

    #[test]
    fn zero_turns_it_off_and_two_caches_have_two_keys() {
        assert!(VerifiedCredentials::new(Duration::ZERO, 8, Clock::default()).is_none());
        assert!(VerifiedCredentials::new(Duration::from_secs(1), 0, Clock::default()).is_none());
        let one = VerifiedCredentials::new(Duration::from_secs(1), 1, Clock::default()).unwrap();
        let two = VerifiedCredentials::new(Duration::from_secs(1), 1, Clock::default()).unwrap();
        assert_ne!(one.tag("a", "b"), two.tag("a", "b"));
        assert_ne!(one.tag("a", "bc"), one.tag("ab", "c"));
    }
}
