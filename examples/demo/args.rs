//! The command-line options the demo and the bench server (`benches/server.rs`) share:
//! where to listen, the keys, the security mode and users, the target and the client's
//! timeouts.

use std::path::PathBuf;

use crate::connection::TimeoutArgs;

/// How the server listens, signs, identifies callers and reaches the target.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,

    /// A directory holding `private-key.pem` (PKCS#1 or PKCS#8) and `public-key.pem`
    /// (SPKI); without it an RSA key pair is generated, so tokens do not survive a restart.
    #[arg(long, value_name = "DIR")]
    pub(crate) keys: Option<PathBuf>,

    /// Every caller is anonymousUser with ROLE_ADMIN, ROLE_ANONYMOUS and ROLE_USER, as a
    /// session without security.
    #[arg(long)]
    pub(crate) unsecured: bool,

    /// A Basic-authentication user (repeatable).
    #[arg(long = "user", value_name = "NAME:PASSWORD:ROLE,ROLE", value_parser = parse_user)]
    pub(crate) users: Vec<UserSpec>,

    /// The initial proxy target; without it the proxy is disabled.
    #[arg(long, value_name = "URL")]
    pub(crate) proxy_url: Option<String>,

    /// How long the target may take to send its response headers (`504` after), in ms.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    pub(crate) upstream_timeout_ms: u64,

    /// Also trust the root certificates in this PEM file for https targets (a private CA);
    /// the webpki roots stay trusted.
    #[arg(long, value_name = "FILE")]
    pub(crate) upstream_ca: Option<PathBuf>,

    /// Speak HTTP/2 with prior knowledge (h2c) to plain-http targets, as gRPC backends need.
    #[arg(long)]
    pub(crate) upstream_h2c: bool,

    #[command(flatten)]
    pub(crate) timeouts: TimeoutArgs,

    /// Send the target `X-Forwarded-For` with the client's address (the TCP peer's IP),
    /// never the client's own `X-Forwarded-For`.
    #[arg(long)]
    pub(crate) forwarded_for: bool,
}

impl ServerArgs {
    /// Whether these options read each request's peer address (axum's `ConnectInfo`):
    /// `--forwarded-for` does, and so does a secured server, which counts failed sign-ins per
    /// client address. The server puts it into requests only then: inserting it allocates
    /// each request's extension map.
    pub(crate) fn reads_peer(&self) -> bool {
        self.forwarded_for || !self.unsecured
    }
}

/// A `--user NAME:PASSWORD:ROLE,ROLE` option.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct UserSpec {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) roles: Vec<String>,
}

impl std::fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSpec")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

fn parse_user(s: &str) -> Result<UserSpec, String> {
    let usage = "expected NAME:PASSWORD:ROLE,ROLE";
    let (name, rest) = s.split_once(':').ok_or(usage)?;
    // The password may contain ':'; the roles are after the last one.
    let (password, roles) = rest.rsplit_once(':').ok_or(usage)?;
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    let roles = roles.split(',').map(str::trim).filter(|r| !r.is_empty());
    Ok(UserSpec {
        name: name.to_owned(),
        password: password.to_owned(),
        roles: roles.map(str::to_owned).collect(),
    })
}
