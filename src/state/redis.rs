//! [`RedisStore`]: the shared state in Redis, changes announced by pub/sub.

use std::{fmt, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use redis::{
    AsyncCommands as _, Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{BoxFuture, Change, Replica, Snapshot, StateStore};
use crate::{
    error::{BoxError, ConfigError},
    proxy::Pseudonym,
};

/// Stores `ARGV[5..]` (field, value pairs; an empty value deletes the field) in the hash
/// `KEYS[2]` with the next version from `KEYS[1]`, each value as `VERSION|VALUE`, and
/// publishes `VERSION|ARGV[3]` on the channel `ARGV[2]`, all at once. With `ARGV[1]` = `1`,
/// does nothing and returns 0 if a field exists already.
const WRITE: &str = r"
if ARGV[1] == '1' then
  for i = 4, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return 0 end
  end
end
local v = redis.call('INCR', KEYS[1])
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], v .. '|' .. ARGV[i + 1])
  end
end
redis.call('PUBLISH', ARGV[2], v .. '|' .. ARGV[3])
return v
";

/// How long a write or a read may take before the store counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often an idle subscription checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(3);

/// The shared state of several replicas in Redis (feature `redis`): the target, the users
/// (password hashes only) and the public keys, with change notifications by pub/sub.
///
/// Each replica keeps the whole state in memory; Redis is read in full when the replica
/// starts and after every reconnection, and is written on changes. Requests never wait on
/// Redis. Layout, under a prefix (default `tip`): the hashes `PREFIX:config` (the target),
/// `PREFIX:users` and `PREFIX:keys`, the counter `PREFIX:version`, the data's name
/// `PREFIX:epoch` and the channel `PREFIX:changes`.
///
/// Built on the `redis` crate: a [`ConnectionManager`] for writes (reconnects by itself)
/// and a dedicated pub/sub connection, reconnected with backoff (up to 2 s between
/// attempts). Writes give up after 2 s.
///
/// # Example
///
/// ```no_run
/// use tower_identity_proxy::{
///     ProxyHandle, ProxyLayer,
///     identity::CredentialStore,
///     jwt::{KeyPair, KeySet, KeySigner},
///     state::{RedisStore, SharedState},
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::open("redis://127.0.0.1:6379/0")?;
/// let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(3072)?)?);
/// let handle = ProxyHandle::new();
/// let proxy = ProxyLayer::new(keys.signer())
///     .via_pseudonym(store.pseudonym())
///     .handle(handle.clone());
/// let state = SharedState::new(store, handle, CredentialStore::new(), keys);
/// state.set_target(Some("http://127.0.0.1:1991")).await?; // on every replica
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The URL without its password, for logs.
    display: String,
    prefix: String,
    writer: tokio::sync::OnceCell<ConnectionManager>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.display)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`, `rediss://` needs the
    /// `redis` crate's TLS features); nothing is connected until it is used.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a URL the `redis` crate refuses.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        let client = Client::open(url).map_err(|e| ConfigError::InvalidSetting {
            name: "Redis URL",
            reason: e.to_string().into(),
        })?;
        let info = client.get_connection_info();
        let display = format!("{}/{}", info.addr(), info.redis_settings().db());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                display,
                prefix: "tip".to_owned(),
                writer: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The prefix of every Redis key this store uses, so that several deployments can
    /// share one Redis. Default is `tip`.
    #[must_use]
    pub fn prefix(self, prefix: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                display: self.inner.display.clone(),
                prefix: prefix.to_owned(),
                writer: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// A `Via` pseudonym every replica of this store derives alike (from the Redis
    /// address, database and prefix), so that a request looping through the balancer back
    /// to any replica is detected (`508`): give it to
    /// [`ProxyLayer::via_pseudonym`](crate::ProxyLayer::via_pseudonym).
    pub fn pseudonym(&self) -> Pseudonym {
        use aws_lc_rs::digest;
        let seed = format!("{}|{}", self.inner.display, self.inner.prefix);
        let hash = digest::digest(&digest::SHA256, seed.as_bytes());
        let hex: String = hash.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // `tip-` and hexadecimal digits: always a token.
        Pseudonym::new(&format!("tip-{hex}")).unwrap_or_else(|_| Pseudonym::random())
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.inner.prefix)
    }

    async fn writer(&self) -> Result<ConnectionManager, BoxError> {
        let manager = self
            .inner
            .writer
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(MAX_BACKOFF);
                ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    async fn write_change(&self, change: Change, if_absent: bool) -> Result<Option<u64>, BoxError> {
        let (hash, fields): (&str, Vec<(String, String)>) = match &change {
            Change::Target(url) => (
                "config",
                vec![(
                    "target".to_owned(),
                    serde_json::to_string(&serde_json::json!({ "url": url }))?,
                )],
            ),
            Change::User { name, user } => (
                "users",
                vec![(
                    name.clone(),
                    match user {
                        Some(user) => serde_json::to_string(user)?,
                        None => String::new(),
                    },
                )],
            ),
            Change::Keys(keys) => (
                "keys",
                keys.iter()
                    .map(|k| Ok((k.kid.clone(), serde_json::to_string(k)?)))
                    .collect::<Result<_, serde_json::Error>>()?,
            ),
            Change::KeyRevoked(kid) => ("keys", vec![(kid.clone(), String::new())]),
            Change::KeysRetired(kids) => (
                "keys",
                kids.iter()
                    .map(|kid| (kid.clone(), String::new()))
                    .collect(),
            ),
        };
        let message = serde_json::to_string(&change)?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(WRITE)
            .arg(2)
            .arg(self.key("version"))
            .arg(self.key(hash))
            .arg(if if_absent { "1" } else { "0" })
            .arg(self.key("changes"))
            .arg(message);
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        let mut conn = self.writer().await?;
        let version: u64 = tokio::time::timeout(TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| "Redis did not answer in time")??;
        Ok((version > 0).then_some(version))
    }

    /// Reads the whole state at once.
    async fn snapshot(&self) -> Result<Snapshot, BoxError> {
        let mut conn = self.writer().await?;
        let fresh_epoch = format!("{:016x}", rand_u64());
        let _: () = tokio::time::timeout(
            TIMEOUT,
            conn.set_nx::<_, _, ()>(self.key("epoch"), &fresh_epoch),
        )
        .await
        .map_err(|_| "Redis did not answer in time")??;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(self.key("epoch"))
            .get(self.key("version"))
            .hgetall(self.key("config"))
            .hgetall(self.key("users"))
            .hgetall(self.key("keys"));
        type Hash = std::collections::HashMap<String, String>;
        type Read = (Option<String>, Option<u64>, Hash, Hash, Hash);
        let (epoch, version, config, users, keys): Read =
            tokio::time::timeout(TIMEOUT, pipe.query_async(&mut conn))
                .await
                .map_err(|_| "Redis did not answer in time")??;
        let mut items = Vec::new();
        for (field, value) in config {
            if field != "target" {
                continue;
            }
            let Some((v, json)) = versioned(&value) else {
                continue;
            };
            #[derive(serde::Deserialize)]
            struct Url {
                url: Option<String>,
            }
            match serde_json::from_str::<Url>(json) {
                Ok(u) => items.push((v, Change::Target(u.url))),
                Err(e) => {
                    tracing::error!(target: "tower_identity_proxy", error = %e, "stored target unreadable")
                }
            }
        }
        for (name, value) in users {
            let Some((v, json)) = versioned(&value) else {
                continue;
            };
            match serde_json::from_str(json) {
                Ok(user) => items.push((
                    v,
                    Change::User {
                        name,
                        user: Some(user),
                    },
                )),
                Err(e) => {
                    tracing::error!(target: "tower_identity_proxy", error = %e, "stored user unreadable")
                }
            }
        }
        for (_, value) in keys {
            let Some((v, json)) = versioned(&value) else {
                continue;
            };
            match serde_json::from_str(json) {
                Ok(key) => items.push((v, Change::Keys(vec![key]))),
                Err(e) => {
                    tracing::error!(target: "tower_identity_proxy", error = %e, "stored key unreadable")
                }
            }
        }
        Ok(Snapshot {
            epoch: epoch.unwrap_or(fresh_epoch),
            version: version.unwrap_or(0),
            items,
        })
    }

    /// Subscribes, reads the whole state, then applies each change until the connection
    /// is lost.
    async fn follow(&self, replica: &Replica, connected: &mut bool) -> Result<(), BoxError> {
        let pubsub = tokio::time::timeout(TIMEOUT, self.inner.client.get_async_pubsub())
            .await
            .map_err(|_| "Redis did not answer in time")??;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(TIMEOUT, sink.subscribe(self.key("changes")))
            .await
            .map_err(|_| "Redis did not answer in time")??;
        // Subscribed first: no change made while the state is read is missed.
        let snapshot = self.snapshot().await?;
        tracing::info!(target: "tower_identity_proxy", redis = %self.inner.display, "connected to Redis");
        replica.sync(snapshot).await;
        *connected = true;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err("the Redis subscription ended".into());
                    };
                    let payload: String = message.get_payload()?;
                    match payload.split_once('|').and_then(|(v, json)| {
                        Some((v.parse::<u64>().ok()?, serde_json::from_str::<Change>(json).ok()?))
                    }) {
                        Some((version, change)) => replica.apply(version, change),
                        None => tracing::error!(target: "tower_identity_proxy", "unreadable change notification"),
                    }
                }
                _ = ping.tick() => {
                    if !replica.is_alive() {
                        return Ok(());
                    }
                    tokio::time::timeout(TIMEOUT, sink.ping::<String>())
                        .await
                        .map_err(|_| "Redis did not answer in time")??;
                    if !replica.is_synced() {
                        // Own keys not published yet (a write failed): read and try again.
                        let snapshot = self.snapshot().await?;
                        replica.sync(snapshot).await;
                    }
                    replica.maintain().await?;
                }
            }
        }
    }
}

/// `VERSION|JSON` → (version, JSON).
fn versioned(value: &str) -> Option<(u64, &str)> {
    let (v, json) = value.split_once('|')?;
    Some((v.parse().ok()?, json))
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // A name for the data, not a secret: fall back to the clock if the system RNG fails.
    if getrandom_fill(&mut bytes).is_err() {
        return crate::jwt::keyset::epoch_millis(std::time::SystemTime::now());
    }
    u64::from_le_bytes(bytes)
}

fn getrandom_fill(bytes: &mut [u8]) -> Result<(), aws_lc_rs::error::Unspecified> {
    use aws_lc_rs::rand::SecureRandom as _;
    aws_lc_rs::rand::SystemRandom::new().fill(bytes)
}

impl StateStore for RedisStore {
    fn write(
        &self,
        change: Change,
        if_absent: bool,
    ) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
        Box::pin(self.write_change(change, if_absent))
    }

    fn subscribe(&self, replica: Replica) {
        let store = self.clone();
        tokio::spawn(async move {
            const FIRST: Duration = Duration::from_millis(50);
            let mut backoff = FIRST;
            while replica.is_alive() {
                let mut connected = false;
                match store.follow(&replica, &mut connected).await {
                    Ok(()) => return,
                    Err(e) => {
                        replica.disconnected();
                        tracing::warn!(target: "tower_identity_proxy", error = %e, redis = %store.inner.display, "Redis unreachable; reconnecting");
                    }
                }
                if connected {
                    backoff = FIRST;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
}
