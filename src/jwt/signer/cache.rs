//! [`CachingSigner`]: reuse each identity's token while it is fresh.

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::OnceCell;

use super::{JwtSigner, SignError, Token};
use crate::jwt::subject::Identity;

type Slot = Arc<OnceCell<Cached>>;

/// A token and until when it is handed out.
struct Cached {
    token: Token,
    /// When it stops being fresh (see [`CachingSigner::fresh_until`]).
    fresh_until: SystemTime,
}
/// A slot and the inner signer's [`generation`](JwtSigner::generation) it was made in.
type Entry = (u64, Slot);

/// The cached tokens, by identity.
type Slots = HashMap<Identity, Entry, BuildHasherDefault<DigestHasher>>;

/// Takes an [`Identity`]'s hash as it is: the digest it writes is already a keyed hash of
/// its name and roles, computed once when it was made.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not what an `Identity` writes; FNV-1a, should anything else be hashed with it.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A [`JwtSigner`] that reuses the token of an identity (name and sorted roles) until half
/// its lifetime is gone, then signs a new one.
///
/// - Concurrent requests of one identity that miss the cache wait for one signature.
/// - No lock is held while signing; the map's mutex is held only to look up a slot.
/// - At most [`max_entries`](Self::max_entries) identities are kept (default 10 000): a
///   flood of distinct identities evicts stale entries first, then arbitrary ones (an
///   eighth of the bound at a time, so that the map is scanned once per eighth of the
///   bound, not on every new identity), and never grows the cache beyond the bound.
/// - A token is only ever handed to a caller with exactly the same name and roles.
/// - When the inner signer's [`generation`](JwtSigner::generation) changes (a
///   [`KeySet`](crate::jwt::KeySet) key was revoked), every cached token is signed afresh. A key
///   *rotation* does not change it: tokens signed by the previous key stay valid, since the
///   previous key stays published until they expire, and are replaced as they age.
///
/// [`ProxyLayer::new`](crate::ProxyLayer::new) puts one in front of the signer it is given.
pub struct CachingSigner<J> {
    inner: J,
    slots: Mutex<Slots>,
    max_entries: usize,
    min_validity: Option<Duration>,
}

impl<J: JwtSigner> CachingSigner<J> {
    /// Caches the tokens of `inner`.
    pub fn new(inner: J) -> Self {
        Self {
            inner,
            slots: Mutex::new(Slots::default()),
            max_entries: 10_000,
            min_validity: None,
        }
    }

    /// The most identities kept. Default is 10 000.
    #[must_use]
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        self
    }

    /// Hands out a cached token only while it stays valid for at least this long. Default
    /// is half of each token's lifetime.
    #[must_use]
    pub fn min_validity(mut self, min: Duration) -> Self {
        self.min_validity = Some(min);
        self
    }

    /// The wrapped signer.
    pub fn inner(&self) -> &J {
        &self.inner
    }

    /// How many identities are cached now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every cached token, so that every identity is signed afresh. A
    /// [`KeySet`](crate::jwt::KeySet) rotation needs no call (see above), nor does a revocation,
    /// which changes the [generation](JwtSigner::generation).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until when `token`, signed for `identity`, is handed out: while it stays valid for
    /// more than the minimum validity (half its lifetime unless set), or, when it already
    /// lasts as long as its identity is vouched for, while it is valid at all (it cannot be
    /// bettered: signing again for each request would only cost a signature each).
    fn fresh_until(&self, identity: &Identity, token: &Token) -> SystemTime {
        let min = self.min_validity.unwrap_or_else(|| {
            token
                .expires_at()
                .duration_since(token.issued_at())
                .unwrap_or_default()
                / 2
        });
        let at_bound = identity
            .expires_at()
            .is_some_and(|bound| token.expires_at() + Duration::from_secs(1) > bound);
        if at_bound {
            token.expires_at()
        } else {
            token
                .expires_at()
                .checked_sub(min)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    fn slot(&self, identity: &Identity) -> Slot {
        let now = SystemTime::now();
        let generation = self.inner.generation();
        let mut slots = self.lock();
        if let Some((made_in, slot)) = slots.get(identity) {
            // A pending slot (another request is signing) is shared: one signature.
            if *made_in == generation && slot.get().is_none_or(|c| now < c.fresh_until) {
                let slot = Arc::clone(slot);
                drop(slots);
                crate::observability::record::token_cache(true);
                return slot;
            }
        }
        if slots.len() >= self.max_entries && !slots.contains_key(identity) {
            // Stale tokens go; a slot still being signed stays, or the requests waiting on
            // its signature would leave no token behind for the next one.
            slots.retain(|_, (made_in, s)| {
                *made_in == generation && s.get().is_none_or(|c| now < c.fresh_until)
            });
            // Still full of fresh tokens: make room for an eighth of the bound at once, so
            // that a flood of new identities scans the map once per eighth, not on every
            // miss (under the lock every request takes).
            if slots.len() >= self.max_entries {
                let keep = self.max_entries - self.max_entries.div_ceil(8);
                let mut over = slots.len() - keep;
                slots.retain(|_, _| {
                    let evict = over > 0;
                    over = over.saturating_sub(1);
                    !evict
                });
            }
        }
        let slot = Slot::default();
        slots.insert(identity.clone(), (generation, Arc::clone(&slot)));
        drop(slots);
        crate::observability::record::token_cache(false);
        slot
    }
}

impl<J: JwtSigner> JwtSigner for CachingSigner<J> {
    async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
        let slot = self.slot(identity);
        let sign = || async {
            let token = self.inner.sign(identity).await?;
            Ok::<_, SignError>(Cached {
                fresh_until: self.fresh_until(identity, &token),
                token,
            })
        };
        match slot.get_or_try_init(sign).await {
            Ok(cached) => Ok(cached.token.clone()),
            Err(e) => {
                // Do not cache failures: drop the slot if it is still ours.
                let mut slots = self.lock();
                if slots
                    .get(identity)
                    .is_some_and(|(_, s)| Arc::ptr_eq(s, &slot))
                {
                    slots.remove(identity);
                }
                Err(e)
            }
        }
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

impl<J: fmt::Debug> fmt::Debug for CachingSigner<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("CachingSigner")
            .field("inner", &self.inner)
            .field("entries", &len)
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts signatures and takes a while, so concurrent misses overlap.
    struct Counting {
        calls: AtomicUsize,
        lifetime: Duration,
    }

    impl JwtSigner for Counting {
        async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = SystemTime::now();
            let expires = now + self.lifetime;
            let expires = identity.expires_at().map_or(expires, |at| at.min(expires));
            Token::new(&format!("{}.{n}", identity.name()), now, expires)
        }
    }

    /// An identity vouched for only a short while (read from a token) gets tokens that
    /// expire with it: such a token is reused as long as it is valid, even when it has less
    /// left than `min_validity` asks, instead of a signature per request.
    #[tokio::test]
    async fn a_token_as_long_as_its_identity_is_reused_until_it_expires() {
        let cache = counting(Duration::from_secs(300)).min_validity(Duration::from_secs(60));
        let bound = SystemTime::now() + Duration::from_secs(10);
        let alice = Identity::new("alice", ["R"]).valid_until(bound);
        let first = cache.sign(&alice).await.unwrap();
        assert!(first.expires_at() <= bound);
        for _ in 0..5 {
            assert_eq!(cache.sign(&alice).await.unwrap().as_str(), first.as_str());
        }
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 1);
        // The same caller without the bound is another key, with its own full-length token.
        let unbounded = cache.sign(&Identity::new("alice", ["R"])).await.unwrap();
        assert!(unbounded.expires_at() > bound + Duration::from_secs(200));
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 2);
    }

    fn counting(lifetime: Duration) -> CachingSigner<Counting> {
        CachingSigner::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime,
        })
    }

    #[tokio::test]
    async fn concurrent_misses_sign_once_per_identity() {
        let cache = Arc::new(counting(Duration::from_secs(300)));
        let alice = Identity::new("alice", ["R"]);
        let bob = Identity::new("bob", ["R"]);
        let mut tasks = Vec::new();
        for i in 0..50 {
            let cache = Arc::clone(&cache);
            let id = if i % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            tasks.push(tokio::spawn(async move {
                (id.clone(), cache.sign(&id).await.unwrap())
            }));
        }
        for t in tasks {
            let (id, token) = t.await.unwrap();
            assert!(
                token.as_str().starts_with(id.name()),
                "token of another caller"
            );
        }
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn same_name_other_roles_is_another_token() {
        let cache = counting(Duration::from_secs(300));
        let a = cache.sign(&Identity::new("u", ["A"])).await.unwrap();
        let b = cache.sign(&Identity::new("u", ["A", "B"])).await.unwrap();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stale_tokens_are_re_signed() {
        let cache = counting(Duration::from_millis(100));
        let id = Identity::new("u", ["A"]);
        cache.sign(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        cache.sign(&id).await.unwrap();
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 2);
    }

    /// Counts signatures; its generation is set by the test.
    struct Generational {
        calls: AtomicUsize,
        generation: std::sync::atomic::AtomicU64,
    }

    impl JwtSigner for Generational {
        async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let now = SystemTime::now();
            Token::new(
                &format!("{}.{n}", identity.name()),
                now,
                now + Duration::from_secs(300),
            )
        }

        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_new_generation_re_signs_every_token() {
        let cache = CachingSigner::new(Generational {
            calls: AtomicUsize::new(0),
            generation: 0.into(),
        });
        assert_eq!(cache.generation(), 0, "the inner signer's");
        let id = Identity::new("u", ["A"]);
        let first = cache.sign(&id).await.unwrap();
        assert_eq!(cache.sign(&id).await.unwrap().as_str(), first.as_str());
        cache.inner().generation.store(1, Ordering::SeqCst);
        let second = cache.sign(&id).await.unwrap();
        assert_ne!(second.as_str(), first.as_str());
        assert_eq!(cache.sign(&id).await.unwrap().as_str(), second.as_str());
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.generation(), 1);
    }

    #[tokio::test]
    async fn clear_forgets_every_token() {
        let cache = counting(Duration::from_secs(300));
        assert!(cache.is_empty());
        let alice = Identity::new("alice", ["R"]);
        let first = cache.sign(&alice).await.unwrap();
        cache.sign(&Identity::new("bob", ["R"])).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(!cache.is_empty());

        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(cache.is_empty());
        let second = cache.sign(&alice).await.unwrap();
        assert_ne!(second.as_str(), first.as_str(), "signed afresh");
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 3);
        assert_eq!(cache.len(), 1);
    }

    /// A full cache makes room by dropping every entry whose token is no longer handed
    /// out, before any fresh one, rather than one arbitrary entry per new identity.
    #[tokio::test]
    async fn a_full_cache_drops_its_stale_entries_first() {
        let cache = counting(Duration::from_secs(300)).max_entries(4);
        let fresh = Identity::new("fresh", ["R"]);
        let kept = cache.sign(&fresh).await.unwrap();
        // Vouched for until a moment ago: their tokens expire with that bound, stale at once.
        let gone = SystemTime::now() - Duration::from_secs(1);
        for i in 0..3 {
            let stale = Identity::new(format!("stale{i}"), ["R"]).valid_until(gone);
            cache.sign(&stale).await.unwrap();
        }
        assert_eq!(cache.len(), 4);

        cache.sign(&Identity::new("new", ["R"])).await.unwrap();
        assert_eq!(cache.len(), 2, "the fresh entry and the new one");
        assert_eq!(cache.sign(&fresh).await.unwrap().as_str(), kept.as_str());
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 5);
    }

    /// The map takes each identity's digest as its hash: distinct callers do not all
    /// collide into one bucket chain.
    #[test]
    fn identities_hash_to_their_digests() {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<DigestHasher>::default();
        let hashes: std::collections::HashSet<u64> = (0..8)
            .map(|i| hasher.hash_one(Identity::new(format!("user{i}"), ["R"])))
            .collect();
        assert_eq!(hashes.len(), 8);
    }

    /// Making room drops stale tokens but keeps a slot whose signature is under way: the
    /// token it gets is cached for the next request instead of being signed again.
    #[tokio::test]
    async fn making_room_keeps_a_signature_under_way() {
        let cache = Arc::new(counting(Duration::from_secs(300)).max_entries(4));
        let gone = SystemTime::now() - Duration::from_secs(1);
        for i in 0..3 {
            let stale = Identity::new(format!("stale{i}"), ["R"]).valid_until(gone);
            cache.sign(&stale).await.unwrap();
        }
        let slow = Identity::new("slow", ["R"]);
        let signing = tokio::spawn({
            let (cache, slow) = (Arc::clone(&cache), slow.clone());
            async move { cache.sign(&slow).await.unwrap() }
        });
        // The spawned request takes its slot, then waits on its signature.
        let slot_taken = async {
            while cache.len() < 4 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), slot_taken)
            .await
            .expect("the spawned request takes a slot");
        cache.sign(&Identity::new("new", ["R"])).await.unwrap();
        assert_eq!(cache.len(), 2, "the slot under way and the new one");
        let first = signing.await.unwrap();
        assert_eq!(cache.sign(&slow).await.unwrap().as_str(), first.as_str());
        assert_eq!(cache.inner().calls.load(Ordering::SeqCst), 5);
    }

    /// A cache full of fresh tokens drops an eighth of its bound at once (rounded up), so
    /// that the next misses insert without scanning the whole map again.
    #[tokio::test]
    async fn a_cache_full_of_fresh_tokens_makes_room_for_an_eighth() {
        let cache = counting(Duration::from_secs(300)).max_entries(20);
        for i in 0..20 {
            cache
                .sign(&Identity::new(format!("user{i}"), ["R"]))
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 20);
        let newcomer = Identity::new("newcomer", ["R"]);
        let token = cache.sign(&newcomer).await.unwrap();
        assert_eq!(cache.len(), 20 - 3 + 1, "three evicted, the newcomer kept");
        assert_eq!(
            cache.sign(&newcomer).await.unwrap().as_str(),
            token.as_str()
        );
        // The next two misses fit without evicting anything.
        for i in 0..2 {
            cache
                .sign(&Identity::new(format!("late{i}"), ["R"]))
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 20);

        let one = counting(Duration::from_secs(300)).max_entries(1);
        one.sign(&Identity::new("a", ["R"])).await.unwrap();
        one.sign(&Identity::new("b", ["R"])).await.unwrap();
        assert_eq!(one.len(), 1, "a bound of one keeps the newest");
    }

    #[tokio::test]
    async fn bounded_in_entries() {
        let cache = counting(Duration::from_secs(300)).max_entries(8);
        for i in 0..40 {
            cache
                .sign(&Identity::new(format!("user{i}"), ["R"]))
                .await
                .unwrap();
            assert!(cache.len() <= 8);
        }
    }
}
