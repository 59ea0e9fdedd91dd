//! [`KeySet`]: one active signing key and the keys tokens are verified with, rotated at
//! run time without a restart and without a failed request.
//!
//! See the [module docs](crate::jwt) for examples.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::{
    error::ConfigError,
    jwt::{
        jwks::{Document, Jwks},
        keys::{Algorithm, KeyPair, PublicKey},
        signer::{JwtSigner, KeySigner, SignError, Token},
        subject::Identity,
        verifier::{SharedKeys, Verifier, VerifyingKey},
    },
};

/// How long a [`KeySet`] publishes a new key before signing with it, unless set with
/// [`KeySet::rotation_delay`]: 95 s, the JWK Set's default `max-age` (60 s) plus the 30 s
/// refresh cool-down of PyJWT's `PyJWKClient` and `jose`, plus 5 s for clocks and
/// change notifications between replicas.
pub const DEFAULT_ROTATION_DELAY: Duration = Duration::from_secs(95);

/// A published public key.
#[derive(Clone)]
struct Published {
    public: PublicKey,
    alg: Algorithm,
    /// When it stops being published and verifying; `None` for the active key, for keys
    /// published by hand and for previous keys whose retirement is too late for the clock.
    retire_at: Option<SystemTime>,
    /// Published for another replica by a state store, which replaces these on each sync.
    shared: bool,
}

impl Published {
    fn verifying_key(&self) -> VerifyingKey {
        let mut key = VerifyingKey::new(&self.public, self.alg);
        key.not_after = self.retire_at;
        key
    }
}

/// A key published to sign from a later time.
#[derive(Clone)]
struct Pending {
    signer: Arc<KeySigner>,
    signs_from: SystemTime,
}

/// What one rotation replaces at once.
struct State {
    signer: Arc<KeySigner>,
    /// When the active key may sign; `None` while a state store has not published it yet.
    signs_from: Option<SystemTime>,
    /// The key published to sign next.
    pending: Option<Pending>,
    /// The active key first, then the others in the order they were published.
    published: Vec<Published>,
    document: Arc<Document>,
}

struct Inner {
    state: ArcSwap<State>,
    verifying: SharedKeys,
    /// Serialises writers (rotate, publish, revoke, retire); readers never take it.
    writer: Mutex<()>,
    grace_ms: AtomicU64,
    delay_ms: AtomicU64,
    generation: AtomicU64,
    /// The earliest `retire_at`, in seconds since the epoch (`u64::MAX`: none).
    next_retirement: AtomicU64,
    /// When the pending key signs, in milliseconds since the epoch (`u64::MAX`: none).
    next_activation: AtomicU64,
}

/// A rotation: the new key's `kid` and when it starts signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    kid: String,
    signs_from: SystemTime,
}

impl Rotation {
    /// The new key's `kid`, published from now on.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When tokens start being signed with it.
    pub fn signs_from(&self) -> SystemTime {
        self.signs_from
    }

    /// The `kid`, owned.
    pub fn into_kid(self) -> String {
        self.kid
    }
}

/// One active signing key and every key tokens are verified with. Cheap to clone: clones
/// share the keys.
///
/// See the [module docs](crate::jwt) for an example.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl KeySet {
    /// A key set whose active key is `signer`'s (with its algorithm and token policy); it
    /// signs at once.
    pub fn new(signer: KeySigner) -> Self {
        let active = Published {
            public: signer.keys().public_key().clone(),
            alg: signer.algorithm(),
            retire_at: None,
            shared: false,
        };
        let state = State::new(Arc::new(signer), Some(UNIX_EPOCH), None, vec![active]);
        let verifying = Arc::new(ArcSwap::from_pointee(state.verifying_keys()));
        Self {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(state),
                verifying,
                writer: Mutex::new(()),
                grace_ms: AtomicU64::new(120_000),
                delay_ms: AtomicU64::new(duration_ms(DEFAULT_ROTATION_DELAY)),
                generation: AtomicU64::new(0),
                next_retirement: AtomicU64::new(u64::MAX),
                next_activation: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// How long a previous key stays published after the last token it signed has expired,
    /// for verifiers whose clock is behind or who accept expired tokens within a leeway
    /// (jsonwebtoken's default is 60 s). Default is 2 minutes.
    #[must_use]
    pub fn retirement_grace(self, grace: Duration) -> Self {
        self.inner
            .grace_ms
            .store(duration_ms(grace), Ordering::Relaxed);
        self
    }

    /// How long [`rotate`](Self::rotate) publishes a new key before signing with it. Default
    /// is [`DEFAULT_ROTATION_DELAY`] (95 s).
    ///
    /// # Warning
    ///
    /// Shorter than the JWK Set's `max-age` plus the refresh cool-down of the targets' JWKS
    /// clients (30 s for PyJWT and `jose`), targets refuse the new key's tokens for a while
    /// after a rotation. `Duration::ZERO` signs with the new key at once.
    #[must_use]
    pub fn rotation_delay(self, delay: Duration) -> Self {
        self.inner
            .delay_ms
            .store(duration_ms(delay), Ordering::Relaxed);
        self
    }

    /// The [retirement grace](Self::retirement_grace).
    pub(crate) fn grace(&self) -> Duration {
        Duration::from_millis(self.inner.grace_ms.load(Ordering::Relaxed))
    }

    /// The [rotation delay](Self::rotation_delay).
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.inner.delay_ms.load(Ordering::Relaxed))
    }

    /// A [`JwtSigner`] signing with the active key, whichever it is when it signs.
    pub fn signer(&self) -> KeySetSigner {
        KeySetSigner { set: self.clone() }
    }

    /// A [`Verifier`] accepting tokens signed by any published key, chosen by `kid`; it
    /// follows rotations.
    pub fn verifier(&self) -> Verifier {
        Verifier::from_shared(Arc::clone(&self.inner.verifying))
    }

    /// A [`Jwks`] service publishing the keys: the active key, every previous key not yet
    /// retired, and the keys given to [`publish`](Self::publish) until they are revoked.
    pub fn jwks(&self) -> Jwks {
        let set = self.clone();
        Jwks::live(move || set.document())
    }

    /// The JWK Set (`{"keys": [...]}`) as JSON, the active key first.
    pub fn jwk_set(&self) -> Value {
        serde_json::from_slice(self.document().body()).unwrap_or(Value::Null)
    }

    /// The `kid` of the active key: the one that signs now (or will, once published).
    pub fn active_kid(&self) -> String {
        self.activate_due();
        self.inner.state.load().signer.keys().kid().to_owned()
    }

    /// The algorithm the active key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.state.load().signer.algorithm()
    }

    /// When the active key signs from: a time in the past once it signs, `None` while a
    /// [state store](crate::state) has not published it yet. Until then the signer fails
    /// with a [`SignError`] that the proxy answers with `503`.
    pub fn signs_from(&self) -> Option<SystemTime> {
        self.activate_due();
        self.inner.state.load().signs_from
    }

    /// Whether the active key signs now.
    pub fn is_signing(&self) -> bool {
        self.signs_from().is_some_and(|t| t <= SystemTime::now())
    }

    /// The key published to sign next, and when, if a rotation is under way.
    pub fn pending(&self) -> Option<KeySigner> {
        self.activate_due();
        self.inner
            .state
            .load()
            .pending
            .as_ref()
            .map(|p| KeySigner::clone(&p.signer))
    }

    /// The rotation under way: the next key's `kid` and when it signs.
    pub fn pending_rotation(&self) -> Option<Rotation> {
        self.activate_due();
        self.inner.state.load().pending.as_ref().map(|p| Rotation {
            kid: p.signer.keys().kid().to_owned(),
            signs_from: p.signs_from,
        })
    }

    /// The `kid`s of the published keys, the active one first.
    pub fn kids(&self) -> Vec<String> {
        self.activate_due();
        self.retire_due();
        self.inner
            .state
            .load()
            .published
            .iter()
            .map(|p| p.public.kid().to_owned())
            .collect()
    }

    /// A number that changes each time a key is [revoked](Self::revoke).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Publishes `keys` now and signs with them after the [rotation
    /// delay](Self::rotation_delay), with the same algorithm and token policy as now;
    /// returns the new `kid` and when it signs. The previous key stays published until its
    /// tokens have expired (see the [module docs](crate::jwt)).
    ///
    /// Rotating to the active key changes nothing; rotating to a key published with
    /// [`publish`](Self::publish) makes it the next key. A rotation under way is replaced:
    /// its key, which never signed, is withdrawn.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if `keys` cannot sign with the current algorithm (use
    /// [`rotate_to`](Self::rotate_to) to change it), or if `keys` is already published for
    /// another algorithm (see [`rotate_to`](Self::rotate_to)).
    pub fn rotate(&self, keys: KeyPair) -> Result<Rotation, ConfigError> {
        let current = self.inner.state.load_full();
        let signer = KeySigner::with_algorithm(keys, current.signer.algorithm())?
            .policy(current.signer.token_policy().clone());
        self.rotate_to(signer)
    }

    /// Publishes `signer`'s key now and makes it (its key, algorithm and token policy) the
    /// active one after the [rotation delay](Self::rotation_delay); returns its `kid` and
    /// when it signs. Verifiers pinned to one algorithm will refuse tokens of another.
    ///
    /// A key is published for one algorithm. Rotating to a key that is already published
    /// for another one (the active key, a previous key not yet retired, or a key given to
    /// [`publish`](Self::publish)) is refused: its `kid` is the thumbprint of the key alone,
    /// so the set could only replace that entry, and the verifier and the targets would
    /// then refuse the tokens it already signed (a
    /// [`CachingSigner`](crate::jwt::CachingSigner) hands them out for up to half their
    /// lifetime), or publish two entries under one `kid`, which a target that picks the JWK
    /// by `kid` cannot tell apart. To change the algorithm, rotate to a new key
    /// (`KeySigner::with_algorithm(KeyPair::generate_rsa(3072)?, Algorithm::PS512)?`); the
    /// same key can take another algorithm once its entry has retired or been
    /// [revoked](Self::revoke).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if `signer`'s key is published for another algorithm;
    /// nothing changes then.
    pub fn rotate_to(&self, signer: KeySigner) -> Result<Rotation, ConfigError> {
        let signs_from = SystemTime::now()
            .checked_add(self.delay())
            .unwrap_or(SystemTime::now());
        self.rotate_at(signer, signs_from)
    }

    /// Publishes `signer`'s key now and makes it the active one at `signs_from`: at once if
    /// that is not in the future (an emergency: targets whose JWKS client fetched the set
    /// less than its refresh cool-down ago refuse its tokens for a while). Otherwise as
    /// [`rotate_to`](Self::rotate_to).
    ///
    /// # Errors
    ///
    /// As [`rotate_to`](Self::rotate_to).
    pub fn rotate_at(
        &self,
        signer: KeySigner,
        signs_from: SystemTime,
    ) -> Result<Rotation, ConfigError> {
        let kid = signer.keys().kid().to_owned();
        let alg = signer.algorithm();
        let mut published_for = None;
        let mut outcome = None;
        let signer = Arc::new(signer);
        self.write(|state, now, grace| {
            if let Some(p) = state
                .published
                .iter()
                .find(|p| p.public.kid() == kid && p.alg != alg)
            {
                published_for = Some(p.alg);
                return None;
            }
            if state.signer.keys().kid() == kid {
                outcome = Some(Rotation {
                    kid: kid.clone(),
                    signs_from: state.signs_from.unwrap_or(signs_from),
                });
                return None;
            }
            if signs_from <= now {
                outcome = Some(Rotation {
                    kid: kid.clone(),
                    signs_from: now,
                });
                return Some(state.switched_to(Arc::clone(&signer), now, grace));
            }
            outcome = Some(Rotation {
                kid: kid.clone(),
                signs_from,
            });
            let withdrawn = state
                .pending
                .as_ref()
                .map(|p| p.signer.keys().kid().to_owned())
                .filter(|k| *k != kid);
            let mut published = Vec::with_capacity(state.published.len() + 1);
            published.push(state.published[0].clone());
            published.push(Published {
                public: signer.keys().public_key().clone(),
                alg,
                retire_at: None,
                shared: false,
            });
            published.extend(
                state.published[1..]
                    .iter()
                    .filter(|p| {
                        p.public.kid() != kid && Some(p.public.kid()) != withdrawn.as_deref()
                    })
                    .cloned(),
            );
            Some(State::new(
                Arc::clone(&state.signer),
                state.signs_from,
                Some(Pending {
                    signer: Arc::clone(&signer),
                    signs_from,
                }),
                published,
            ))
        });
        if let Some(published) = published_for {
            return Err(ConfigError::InvalidKey(
                format!(
                    "the key {kid} is published for {published}, so it cannot sign with {alg}; \
                     rotate to a new key for {alg}"
                )
                .into(),
            ));
        }
        let rotation = outcome.unwrap_or(Rotation { kid, signs_from });
        tracing::info!(
            target: "tower_identity_proxy",
            kid = %rotation.kid,
            signs_from_unix_ms = epoch_millis(rotation.signs_from),
            "signing key rotation"
        );
        Ok(rotation)
    }

    /// Publishes another public key, which then verifies tokens until it is
    /// [revoked](Self::revoke): the next key before a rotation (see the
    /// [JWKS caching caveat](crate::jwt#caching-caveat)), or another replica's key.
    ///
    /// Publishing a key again for the algorithm it is published for changes nothing.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if `key` cannot verify `alg`, or if it is already
    /// published (or active) for another algorithm: a key is published for one algorithm
    /// only, since its `kid` is the thumbprint of the key alone (see
    /// [`rotate_to`](Self::rotate_to)). Nothing changes then.
    pub fn publish(&self, key: &PublicKey, alg: Algorithm) -> Result<(), ConfigError> {
        self.publish_entry(key, alg, None, false)
    }

    /// Publishes (or updates the retirement of) another replica's key, for a state store.
    pub(crate) fn publish_shared(
        &self,
        key: &PublicKey,
        alg: Algorithm,
        retire_at: Option<SystemTime>,
    ) -> Result<(), ConfigError> {
        self.publish_entry(key, alg, retire_at, true)
    }

    fn publish_entry(
        &self,
        key: &PublicKey,
        alg: Algorithm,
        retire_at: Option<SystemTime>,
        shared: bool,
    ) -> Result<(), ConfigError> {
        if !key.supports(alg) {
            return Err(ConfigError::InvalidKey(
                format!("the key {} cannot verify {alg}", key.kid()).into(),
            ));
        }
        let mut published_for = None;
        self.write(|state, _, _| {
            if let Some(p) = state.published.iter().find(|p| p.public.kid() == key.kid()) {
                if p.alg != alg {
                    published_for = Some(p.alg);
                    return None;
                }
                // Another replica's key: its owner may have set or moved its retirement.
                if !(p.shared && shared && p.retire_at != retire_at) {
                    return None;
                }
                let published = state
                    .published
                    .iter()
                    .map(|p| {
                        let mut p = p.clone();
                        if p.public.kid() == key.kid() {
                            p.retire_at = retire_at;
                        }
                        p
                    })
                    .collect();
                return Some(state.with_published(published));
            }
            let mut published = state.published.clone();
            published.push(Published {
                public: key.clone(),
                alg,
                retire_at,
                shared,
            });
            Some(state.with_published(published))
        });
        match published_for {
            Some(published) => Err(ConfigError::InvalidKey(
                format!(
                    "the key {} is already published for {published}, so it cannot be \
                     published for {alg}",
                    key.kid()
                )
                .into(),
            )),
            None => Ok(()),
        }
    }

    /// Keeps the other replicas' keys to those in `keep` (a state store's full sync): a
    /// shared key missing from it retires once the tokens it may have signed have expired.
    pub(crate) fn retain_shared(&self, keep: &dyn Fn(&str) -> bool, lifetime: Duration) {
        self.write(|state, now, grace| {
            let retire_at = now.checked_add(lifetime).and_then(|t| t.checked_add(grace));
            let mut changed = false;
            let published = state
                .published
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    if p.shared && !keep(p.public.kid()) {
                        let at = match (p.retire_at, retire_at) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        changed |= at != p.retire_at;
                        p.retire_at = at;
                    }
                    p
                })
                .collect();
            changed.then(|| state.with_published(published))
        });
    }

    /// Sets when the active key `kid` may sign (`None`: not yet), for a state store that
    /// publishes it first. Returns whether `kid` is the active key.
    pub(crate) fn hold_active(&self, kid: &str, signs_from: Option<SystemTime>) -> bool {
        let mut found = false;
        self.write(|state, _, _| {
            found = state.signer.keys().kid() == kid;
            (found && state.signs_from != signs_from).then(|| {
                State::new(
                    Arc::clone(&state.signer),
                    signs_from,
                    state.pending.clone(),
                    state.published.clone(),
                )
            })
        });
        found
    }

    /// The keys this set signs with or will: the active key and the pending one, with when
    /// each signs (`None`: held), and the previous keys of this set still published with
    /// their retirement.
    pub(crate) fn own_keys(&self) -> OwnKeys {
        self.activate_due();
        let state = self.inner.state.load();
        let previous = state
            .published
            .iter()
            .filter(|p| !p.shared && p.retire_at.is_some())
            .map(|p| (p.public.clone(), p.alg, p.retire_at))
            .collect();
        OwnKeys {
            active: (Arc::clone(&state.signer), state.signs_from),
            pending: state
                .pending
                .as_ref()
                .map(|p| (Arc::clone(&p.signer), p.signs_from)),
            previous,
        }
    }

    /// Withdraws the key `kid` at once: it is no longer published or accepted, and cached
    /// tokens are signed afresh. Returns whether such a key was published. A pending key
    /// (a rotation under way) is withdrawn with its rotation.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] for the active key: [rotate](Self::rotate_at) first.
    pub fn revoke(&self, kid: &str) -> Result<bool, ConfigError> {
        if self.active_kid() == kid {
            return Err(ConfigError::InvalidKey(
                "the active key cannot be revoked; rotate to another key first".into(),
            ));
        }
        // The generation first: a token the cache holds, signed by the key, must not be
        // handed out once the key is gone from the set, not even between the two steps.
        // (A kid not found costs one needless re-signing per cached identity.)
        if self.kids().iter().any(|k| k == kid) {
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        let mut found = false;
        self.write(|state, _, _| {
            if state.signer.keys().kid() == kid {
                return None;
            }
            let published: Vec<Published> = state
                .published
                .iter()
                .filter(|p| p.public.kid() != kid)
                .cloned()
                .collect();
            found = published.len() != state.published.len();
            let pending = state
                .pending
                .clone()
                .filter(|p| p.signer.keys().kid() != kid);
            found.then(|| {
                State::new(
                    Arc::clone(&state.signer),
                    state.signs_from,
                    pending,
                    published,
                )
            })
        });
        if found {
            // Again: a token signed by the key in the meantime (by a signer that read the
            // set before the swap) is not reused either.
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(target: "tower_identity_proxy", kid, "key revoked");
        }
        Ok(found)
    }

    /// Retires now the previous keys whose tokens have all expired (this also happens by
    /// itself whenever the set signs or is served) and returns how many were retired.
    pub fn retire_expired(&self) -> usize {
        let mut retired = 0;
        self.write(|state, now, _| {
            let published: Vec<Published> = state
                .published
                .iter()
                .filter(|p| p.retire_at.is_none_or(|at| at > now))
                .cloned()
                .collect();
            retired = state.published.len() - published.len();
            (retired > 0).then(|| state.with_published(published))
        });
        if retired > 0 {
            tracing::info!(target: "tower_identity_proxy", retired, "previous signing keys retired");
        }
        retired
    }

    /// Retires due keys if the earliest retirement has come (one atomic load otherwise).
    fn retire_due(&self) {
        let next = self.inner.next_retirement.load(Ordering::Acquire);
        if next != u64::MAX && epoch_secs(SystemTime::now()) >= next {
            self.retire_expired();
        }
    }

    /// Makes the pending key active if its time has come (one atomic load otherwise).
    fn activate_due(&self) {
        let next = self.inner.next_activation.load(Ordering::Acquire);
        if next == u64::MAX || epoch_millis(SystemTime::now()) < next {
            return;
        }
        let mut switched = None;
        self.write(|state, now, grace| {
            let pending = state.pending.as_ref().filter(|p| p.signs_from <= now)?;
            switched = Some(pending.signer.keys().kid().to_owned());
            Some(state.switched_to(Arc::clone(&pending.signer), now, grace))
        });
        if let Some(kid) = switched {
            tracing::info!(target: "tower_identity_proxy", kid = %kid, "signing with the rotated-to key");
        }
    }

    /// The JWK Set document, after retiring due keys.
    pub(crate) fn document(&self) -> Arc<Document> {
        self.activate_due();
        self.retire_due();
        Arc::clone(&self.inner.state.load().document)
    }

    /// Replaces the state with what `change` returns (if anything), under the writer lock.
    fn write<F>(&self, change: F)
    where
        F: FnOnce(&State, SystemTime, Duration) -> Option<State>,
    {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.inner.state.load_full();
        let grace = Duration::from_millis(self.inner.grace_ms.load(Ordering::Relaxed));
        let Some(next) = change(&current, SystemTime::now(), grace) else {
            return;
        };
        let next_retirement = next
            .published
            .iter()
            .filter_map(|p| p.retire_at)
            .min()
            // Retire at the first whole second after the instant.
            .map_or(u64::MAX, |at| epoch_secs(at) + 1);
        let next_activation = next
            .pending
            .as_ref()
            .map_or(u64::MAX, |p| epoch_millis(p.signs_from));
        self.inner.verifying.store(Arc::new(next.verifying_keys()));
        self.inner.state.store(Arc::new(next));
        self.inner
            .next_retirement
            .store(next_retirement, Ordering::Release);
        self.inner
            .next_activation
            .store(next_activation, Ordering::Release);
    }
}

/// What [`KeySet::own_keys`] returns.
pub(crate) struct OwnKeys {
    pub(crate) active: (Arc<KeySigner>, Option<SystemTime>),
    pub(crate) pending: Option<(Arc<KeySigner>, SystemTime)>,
    pub(crate) previous: Vec<(PublicKey, Algorithm, Option<SystemTime>)>,
}

impl State {
    fn new(
        signer: Arc<KeySigner>,
        signs_from: Option<SystemTime>,
        pending: Option<Pending>,
        published: Vec<Published>,
    ) -> Self {
        let document = Arc::new(Document::new(
            published.iter().map(|p| p.public.to_jwk(p.alg)).collect(),
        ));
        Self {
            signer,
            signs_from,
            pending,
            published,
            document,
        }
    }

    /// The same keys, signer and rotation, with another list of published keys.
    fn with_published(&self, published: Vec<Published>) -> Self {
        Self::new(
            Arc::clone(&self.signer),
            self.signs_from,
            self.pending.clone(),
            published,
        )
    }

    /// `signer` active from `now`; the previous key retires once its tokens have expired,
    /// plus `grace`; a rotation under way to another key is dropped with its key.
    fn switched_to(&self, signer: Arc<KeySigner>, now: SystemTime, grace: Duration) -> Self {
        let previous = &self.signer;
        let kid = signer.keys().kid();
        // After its last token expires, plus the grace; never if that is too late for
        // the clock (a `Duration::MAX` grace): the key then stays until revoked.
        let retire_at = now
            .checked_add(previous.token_policy().token_lifetime())
            .and_then(|expires| expires.checked_add(grace));
        let withdrawn = self
            .pending
            .as_ref()
            .map(|p| p.signer.keys().kid())
            .filter(|k| *k != kid);
        let mut published = vec![Published {
            public: signer.keys().public_key().clone(),
            alg: signer.algorithm(),
            retire_at: None,
            shared: false,
        }];
        for p in &self.published {
            if p.public.kid() == kid || Some(p.public.kid()) == withdrawn {
                continue;
            }
            let mut p = p.clone();
            if p.public.kid() == previous.keys().kid() {
                p.retire_at = retire_at;
            }
            published.push(p);
        }
        Self::new(signer, Some(now), None, published)
    }

    fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.published
            .iter()
            .map(Published::verifying_key)
            .collect()
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        let kids: Vec<&str> = state.published.iter().map(|p| p.public.kid()).collect();
        f.debug_struct("KeySet")
            .field("active", &state.signer)
            .field(
                "pending",
                &state.pending.as_ref().map(|p| p.signer.keys().kid()),
            )
            .field("published", &kids)
            .field("generation", &self.generation())
            .finish()
    }
}

/// Signs with the active key of a [`KeySet`]; see [`KeySet::signer`].
#[derive(Clone, Debug)]
pub struct KeySetSigner {
    set: KeySet,
}

impl KeySetSigner {
    /// The key set.
    pub fn key_set(&self) -> &KeySet {
        &self.set
    }
}

impl JwtSigner for KeySetSigner {
    async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
        self.set.activate_due();
        self.set.retire_due();
        let state = self.set.inner.state.load();
        if state.signs_from.is_none_or(|t| t > SystemTime::now()) {
            return Err(SignError::not_ready(
                "the signing key is not published long enough yet",
            ));
        }
        let signer = Arc::clone(&state.signer);
        drop(state);
        signer.sign(identity).await
    }

    fn generation(&self) -> u64 {
        self.set.generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Curve, TokenPolicy};

    fn header_kid(token: &Token) -> String {
        jsonwebtoken::decode_header(token.as_str())
            .unwrap()
            .kid
            .unwrap()
    }

    /// Verifies `token` with jsonwebtoken alone against the set's JWK Set, as a target
    /// does: the JWK its `kid` names, with the algorithm that JWK declares.
    fn decode_with_jwk_set(set: &KeySet, token: &Token) -> Result<String, String> {
        crate::jwt::verifier::ensure_jwt_provider();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(set.jwk_set()).unwrap();
        let kid = header_kid(token);
        let jwk = jwks.find(&kid).ok_or("the kid is not published")?;
        let alg: jsonwebtoken::Algorithm = jwk
            .common
            .key_algorithm
            .unwrap()
            .to_string()
            .parse()
            .unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<serde_json::Value>(token.as_str(), &key, &validation)
            .map(|data| data.claims["sub"].as_str().unwrap().to_owned())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn rotating_a_published_key_to_another_algorithm_keeps_its_tokens_verifiable() {
        let a = KeyPair::generate_rsa(2048).unwrap();
        let b = KeyPair::generate_rsa(2048).unwrap();
        let ps512 = |k: &KeyPair| KeySigner::with_algorithm(k.clone(), Algorithm::PS512).unwrap();
        let id = Identity::new("u", ["R"]);

        // The active key, to another algorithm.
        let set = KeySet::new(KeySigner::rs512(a.clone()).unwrap()).rotation_delay(Duration::ZERO);
        let issued = set.signer().sign(&id).await.unwrap();
        let refused = set.rotate_to(ps512(&a)).unwrap_err().to_string();
        assert!(refused.contains("published for RS512"), "{refused}");
        assert_eq!(
            decode_with_jwk_set(&set, &issued).as_deref(),
            Ok("u"),
            "active"
        );
        assert_eq!(set.algorithm(), Algorithm::RS512);
        assert_eq!(header_kid(&set.signer().sign(&id).await.unwrap()), a.kid());

        // The previous key, still retiring, back with another algorithm.
        let set = KeySet::new(KeySigner::rs512(a.clone()).unwrap()).rotation_delay(Duration::ZERO);
        let issued = set.signer().sign(&id).await.unwrap();
        set.rotate(b.clone()).unwrap();
        assert!(set.rotate_to(ps512(&a)).is_err());
        assert_eq!(
            decode_with_jwk_set(&set, &issued).as_deref(),
            Ok("u"),
            "previous"
        );
        assert_eq!(set.active_kid(), b.kid());
        // Once revoked (or retired), the key may sign with another algorithm.
        set.revoke(a.kid()).unwrap();
        assert_eq!(set.rotate_to(ps512(&a)).unwrap().into_kid(), a.kid());
        assert_eq!(set.jwk_set()["keys"][0]["alg"], "PS512");

        // A key published for PS512 (another replica signs with it), rotated to with RS512.
        let set = KeySet::new(KeySigner::rs512(a.clone()).unwrap()).rotation_delay(Duration::ZERO);
        set.publish(b.public_key(), Algorithm::PS512).unwrap();
        let from_replica = KeySigner::with_algorithm(b.clone(), Algorithm::PS512)
            .unwrap()
            .sign(&id)
            .await
            .unwrap();
        assert!(set.rotate(b.clone()).is_err());
        assert_eq!(
            decode_with_jwk_set(&set, &from_replica).as_deref(),
            Ok("u"),
            "published"
        );
        assert_eq!(set.active_kid(), a.kid());
        // With the algorithm it is published for, it becomes active.
        assert_eq!(set.rotate_to(ps512(&b)).unwrap().into_kid(), b.kid());
        assert_eq!(decode_with_jwk_set(&set, &from_replica).as_deref(), Ok("u"));
    }

    #[tokio::test]
    async fn publishing_a_published_key_for_another_algorithm_is_refused() {
        let a = KeyPair::generate_rsa(2048).unwrap();
        let b = KeyPair::generate_rsa(2048).unwrap();
        let set = KeySet::new(KeySigner::rs512(a.clone()).unwrap()).rotation_delay(Duration::ZERO);
        set.publish(b.public_key(), Algorithm::RS256).unwrap();
        let jwks = set.jwk_set();
        // Another replica signs with `b` and PS512: its tokens would not verify.
        let from_replica = KeySigner::with_algorithm(b.clone(), Algorithm::PS512)
            .unwrap()
            .sign(&Identity::new("u", ["R"]))
            .await
            .unwrap();
        assert!(decode_with_jwk_set(&set, &from_replica).is_err());

        let refused = set.publish(b.public_key(), Algorithm::PS512);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("published for RS256")),
            "{refused:?}"
        );
        assert!(
            set.publish(a.public_key(), Algorithm::PS512).is_err(),
            "active"
        );
        assert_eq!(set.jwk_set(), jwks, "nothing changed");
        // The same algorithm again changes nothing and is no error.
        set.publish(b.public_key(), Algorithm::RS256).unwrap();
        set.publish(a.public_key(), Algorithm::RS512).unwrap();
        assert_eq!(set.jwk_set(), jwks);
    }

    #[tokio::test]
    async fn rotation_switches_signing_and_keeps_the_old_key_until_retired() {
        let first = KeyPair::generate_ec(Curve::P256).unwrap();
        let set = KeySet::new(
            KeySigner::new(first.clone()).policy(TokenPolicy::new().lifetime(Duration::ZERO)),
        )
        .rotation_delay(Duration::ZERO)
        .retirement_grace(Duration::ZERO);
        let signer = set.signer();
        let verifier = set.verifier();
        let id = Identity::new("u", ["R"]);
        let old = signer.sign(&id).await.unwrap();
        assert_eq!(header_kid(&old), first.kid());

        let second = KeyPair::generate_ec(Curve::P256).unwrap();
        assert_eq!(set.rotate(second.clone()).unwrap().into_kid(), second.kid());
        let new = signer.sign(&id).await.unwrap();
        assert_eq!(header_kid(&new), second.kid());
        assert_eq!(set.kids(), [second.kid(), first.kid()]);
        assert_eq!(set.jwk_set()["keys"][1]["kid"], first.kid());

        // Zero lifetime and grace: the old key retires at the next whole second.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(set.kids(), [second.kid()]);
        assert!(!verifier.knows_kid(first.kid()));
        assert_eq!(set.jwk_set()["keys"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn rotation_with_unlimited_lifetime_and_grace_keeps_the_old_key() {
        let first = KeyPair::generate_ec(Curve::P256).unwrap();
        for (lifetime, grace) in [
            (Duration::MAX, Duration::ZERO),
            (Duration::ZERO, Duration::MAX),
            (Duration::MAX, Duration::MAX),
        ] {
            let policy = TokenPolicy::new().lifetime(lifetime);
            let set = KeySet::new(KeySigner::new(first.clone()).policy(policy))
                .rotation_delay(Duration::ZERO)
                .retirement_grace(grace);
            let old = set.signer().sign(&Identity::new("u", ["R"])).await.unwrap();
            let second = KeyPair::generate_ec(Curve::P256).unwrap();
            set.rotate(second.clone()).unwrap();
            assert_eq!(set.retire_expired(), 0, "{lifetime:?} {grace:?}");
            assert_eq!(set.kids(), [second.kid(), first.kid()]);
            assert!(set.verifier().verify(old.as_str()).is_ok());
        }
    }

    #[test]
    fn rotate_keeps_the_algorithm_or_refuses() {
        let set = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048).unwrap()).unwrap())
            .rotation_delay(Duration::ZERO);
        assert!(set.rotate(KeyPair::generate_ed25519().unwrap()).is_err());
        let ed = KeyPair::generate_ed25519().unwrap();
        assert_eq!(
            set.rotate_to(KeySigner::new(ed.clone()))
                .unwrap()
                .into_kid(),
            ed.kid()
        );
        assert_eq!(set.algorithm(), Algorithm::EdDSA);
        // Rotating to the active key changes nothing.
        set.rotate(ed.clone()).unwrap();
        assert_eq!(set.kids().len(), 2);
    }

    #[test]
    fn publish_then_rotate_and_revoke() {
        let a = KeyPair::generate_ed25519().unwrap();
        let b = KeyPair::generate_ed25519().unwrap();
        let set = KeySet::new(KeySigner::new(a.clone())).rotation_delay(Duration::ZERO);
        let verifier = set.verifier();
        set.publish(b.public_key(), Algorithm::EdDSA).unwrap();
        assert!(set.publish(b.public_key(), Algorithm::RS512).is_err());
        set.publish(b.public_key(), Algorithm::EdDSA).unwrap();
        assert_eq!(set.kids(), [a.kid(), b.kid()]);
        assert!(verifier.knows_kid(b.kid()));

        set.rotate(b.clone()).unwrap();
        assert_eq!(set.kids(), [b.kid(), a.kid()]);
        assert!(set.revoke(b.kid()).is_err(), "the active key stays");
        assert_eq!(set.generation(), 0);
        assert!(set.revoke(a.kid()).unwrap());
        let revoked = set.generation();
        assert_ne!(revoked, 0, "a revocation changes the generation");
        assert_eq!(set.signer().generation(), revoked);
        // Revoking a kid that is not there changes nothing.
        assert!(!set.revoke(a.kid()).unwrap());
        assert_eq!(set.generation(), revoked);
        assert_eq!(set.kids(), [b.kid()]);
        assert!(!verifier.knows_kid(a.kid()));
    }

    #[tokio::test]
    async fn a_verifier_with_an_extra_key_still_follows_the_set() {
        let a = KeyPair::generate_ed25519().unwrap();
        let replica = KeyPair::generate_ed25519().unwrap();
        let set = KeySet::new(KeySigner::new(a.clone())).rotation_delay(Duration::ZERO);
        let verifier = set
            .verifier()
            .with_key(replica.public_key(), Algorithm::EdDSA);
        let id = Identity::new("u", ["R"]);
        let old = set.signer().sign(&id).await.unwrap();
        let from_replica = KeySigner::new(replica).sign(&id).await.unwrap();

        set.rotate(KeyPair::generate_ed25519().unwrap()).unwrap();
        let new = set.signer().sign(&id).await.unwrap();
        assert!(verifier.verify(new.as_str()).is_ok(), "the rotated-to key");
        assert!(verifier.verify(old.as_str()).is_ok(), "the previous key");

        set.revoke(a.kid()).unwrap();
        assert!(verifier.verify(old.as_str()).is_err(), "a revoked key");
        assert!(!verifier.knows_kid(a.kid()));
        assert!(
            verifier.verify(from_replica.as_str()).is_ok(),
            "the extra key"
        );
    }

    #[tokio::test]
    async fn a_rotated_key_is_published_before_it_signs() {
        let first = KeyPair::generate_ed25519().unwrap();
        let second = KeyPair::generate_ed25519().unwrap();
        let set = KeySet::new(KeySigner::new(first.clone()));
        assert_eq!(set.delay(), DEFAULT_ROTATION_DELAY);
        let id = Identity::new("u", ["R"]);
        let before = SystemTime::now();
        let rotation = set.rotate(second.clone()).unwrap();
        assert_eq!(rotation.kid(), second.kid());
        assert!(rotation.signs_from() >= before + DEFAULT_ROTATION_DELAY);
        assert_eq!(set.pending_rotation(), Some(rotation.clone()));
        // Published (JWK Set and verifier) at once, signing still with the first key.
        assert_eq!(set.kids(), [first.kid(), second.kid()]);
        assert!(set.verifier().knows_kid(second.kid()));
        assert_eq!(set.jwk_set()["keys"][1]["kid"], second.kid());
        assert_eq!(
            header_kid(&set.signer().sign(&id).await.unwrap()),
            first.kid()
        );
        assert_eq!(set.active_kid(), first.kid());

        // A second rotation replaces the first: its key, which never signed, is withdrawn.
        let third = KeyPair::generate_ed25519().unwrap();
        set.rotate(third.clone()).unwrap();
        assert_eq!(set.kids(), [first.kid(), third.kid()]);

        // Due now: it signs, the previous key stays published until retired.
        let now = set
            .rotate_at(set.pending().unwrap(), SystemTime::now())
            .unwrap();
        assert_eq!(now.kid(), third.kid());
        assert!(set.pending_rotation().is_none());
        assert_eq!(
            header_kid(&set.signer().sign(&id).await.unwrap()),
            third.kid()
        );
        assert_eq!(set.kids(), [third.kid(), first.kid()]);
    }

    #[tokio::test]
    async fn a_pending_key_signs_once_its_time_has_come() {
        let first = KeyPair::generate_ed25519().unwrap();
        let second = KeyPair::generate_ed25519().unwrap();
        let set =
            KeySet::new(KeySigner::new(first.clone())).rotation_delay(Duration::from_millis(200));
        let rotation = set.rotate(second.clone()).unwrap();
        let id = Identity::new("u", ["R"]);
        let switched = async {
            loop {
                let kid = header_kid(&set.signer().sign(&id).await.unwrap());
                if kid == second.kid() {
                    break;
                }
                assert_eq!(kid, first.kid());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), switched)
            .await
            .expect("the pending key signs once due");
        assert!(SystemTime::now() >= rotation.signs_from());
        assert_eq!(set.kids(), [second.kid(), first.kid()]);
    }

    #[tokio::test]
    async fn a_held_key_does_not_sign() {
        let key = KeyPair::generate_ed25519().unwrap();
        let set = KeySet::new(KeySigner::new(key.clone()));
        assert!(set.is_signing());
        assert!(set.hold_active(key.kid(), None));
        assert!(!set.is_signing());
        let refused = set.signer().sign(&Identity::new("u", ["R"])).await;
        assert!(refused.is_err_and(|e| e.is_not_ready()));
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(set.hold_active(key.kid(), Some(later)));
        assert!(set.signer().sign(&Identity::new("u", ["R"])).await.is_err());
        assert!(set.hold_active(key.kid(), Some(SystemTime::now())));
        assert!(set.signer().sign(&Identity::new("u", ["R"])).await.is_ok());
        assert!(!set.hold_active("another", None));
    }

    #[test]
    fn shared_keys_follow_their_store() {
        let mine = KeyPair::generate_ed25519().unwrap();
        let other = KeyPair::generate_ed25519().unwrap();
        let set = KeySet::new(KeySigner::new(mine.clone()));
        set.publish_shared(other.public_key(), Algorithm::EdDSA, None)
            .unwrap();
        assert_eq!(set.kids(), [mine.kid(), other.kid()]);
        // Its owner rotated: it retires at a time the store says.
        let at = SystemTime::now() + Duration::from_secs(3600);
        set.publish_shared(other.public_key(), Algorithm::EdDSA, Some(at))
            .unwrap();
        assert_eq!(set.own_keys().previous.len(), 0, "not this set's key");
        // Gone from the store: it retires once its tokens may have expired, not at once.
        set.retain_shared(&|_| false, Duration::from_secs(60));
        assert_eq!(set.kids(), [mine.kid(), other.kid()]);
        set.retain_shared(&|_| false, Duration::ZERO);
        let set = set.retirement_grace(Duration::ZERO);
        set.retain_shared(&|_| false, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(set.retire_expired(), 1);
        assert_eq!(set.kids(), [mine.kid()]);
    }

    #[test]
    fn debug_shows_kids_only() {
        let k = KeyPair::generate_ed25519().unwrap();
        let set = KeySet::new(KeySigner::new(k.clone())).rotation_delay(Duration::ZERO);
        let dbg = format!("{set:?}");
        assert!(dbg.contains(k.kid()));
        assert!(!dbg.contains("PRIVATE"));
    }

    /// While other tasks keep signing through the token cache, keys rotate and the
    /// previous one is revoked, over and over: once `revoke` has returned, every token the
    /// cache hands out verifies against the published set (jsonwebtoken, from the JWK Set),
    /// none is the revoked key's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_token_of_a_revoked_key_is_handed_out_while_keys_change_under_load() {
        use std::sync::atomic::AtomicBool;
        let set = KeySet::new(KeySigner::new(KeyPair::generate_ed25519().unwrap()))
            .rotation_delay(Duration::ZERO);
        let cache = Arc::new(crate::jwt::CachingSigner::new(set.signer()));
        let users: Arc<Vec<Identity>> = Arc::new(
            (0..4)
                .map(|i| Identity::new(format!("user{i}"), ["R"]))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let (cache, users, stop) = (cache.clone(), users.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut signed = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for user in users.iter() {
                            cache.sign(user).await.unwrap();
                            signed += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    signed
                })
            })
            .collect();

        for round in 0..40 {
            let old = set.active_kid();
            set.rotate(KeyPair::generate_ed25519().unwrap()).unwrap();
            assert!(set.revoke(&old).unwrap());
            for user in users.iter() {
                let token = cache.sign(user).await.unwrap();
                assert_ne!(header_kid(&token), old, "round {round}");
                assert_eq!(
                    decode_with_jwk_set(&set, &token).as_deref(),
                    Ok(user.name()),
                    "round {round}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        for task in busy {
            assert!(task.await.unwrap() > 0, "the other signers ran");
        }
    }
}
