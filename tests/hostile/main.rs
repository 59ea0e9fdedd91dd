//! Hostile input and failing peers, over real sockets: one module per area (A framing, B
//! hop-by-hop headers, C host and forwarding headers, D paths, E methods and upgrades, F
//! responses, G faults, H credentials, I tokens, J HTTP/2, K plumbing, L configuration),
//! each case its own test named after its id (`a1_…`). Each module names the RFC sections,
//! CVEs and upstream issues its cases come from.
//!
//! A raw TCP client talks to a real app (axum `Router` + [`ProxyLayer`]) that forwards to a
//! capturing upstream recording the exact bytes it receives (see `tests/common/hostile.rs`). Cases that do
//! not apply are listed, one line each, in the module of their section:
//! - G11 (configured body limit): the layer offers none; `tower_http::limit` does it (an
//!   upload outgrowing such a limit is `413`: `g11_an_upload_outgrowing_a_limit_in_front_is_413`).
//! - H6 (no secret in logs) is not here but in `tests/tracing_redaction.rs` (it needs a
//!   global subscriber, hence its own binary).
//!
//! `corpus` runs the AWS http-desync-guardian corpus; `n_no_panic` checks that no request
//! panics (non-UTF-8 values, header counts, odd request targets).
//!
//! [`ProxyLayer`]: tower_identity_proxy::ProxyLayer

#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;
use common::hostile as support;

mod a_framing;
mod b_hop_by_hop;
mod c_host;
mod corpus;
mod d_paths;
mod e_methods;
mod f_responses;
mod g_faults;
mod h_credentials;
mod i_token;
mod j_http2;
mod k_plumbing;
mod l_config;
mod n_no_panic;
mod o_boundaries;
