//! Who a request comes from, and what it may do.
//!
//! Owns the authentication plumbing and the authorizer:
//! - [`Security`]: what a secured server needs (its serving certificate, the CAs its
//!   clients' certificates chain to, an [`Authenticate`] that maps a certificate or a
//!   bearer token to an [`Identity`], and the extra routes of the binary).
//! - [`tls`]: the serving certificate ([`ServingCertificate`], replaceable while
//!   serving), the rustls configuration, and the TLS accept loop that authenticates a
//!   connection's client certificate once.
//! - The middleware: a `Authorization: Bearer` header authenticated per request (and
//!   removed before any handler sees it); the resulting [`Identity`] is a request
//!   extension. Anonymous requests reach only health, version and the binary's routes
//!   ([`anonymous_may_reach`]); anything else is a 401.
//! - [`authorize`](mod@authorize): the fixed rules of who may do what, as a pure function.
//! - Plain HTTP, off unless the authenticator opts in ([`Authenticate::plain_http`]):
//!   a connection whose first byte is not a TLS handshake's (`0x16`), from a peer the
//!   authenticator admits, is served as plain HTTP, each request marked [`PlainHttp`]
//!   and refused unless the authenticator admits its path. `oakestra up` uses it for
//!   Oakestra's CLI on loopback only (`docs/security.md`).
//!
//! No network request can be [`Identity::System`]: an authenticator answering it is
//! treated as refusing the credential. Requests handed over in process
//! ([`crate::Server::local`]) carry it.

pub mod authorize;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pki::Identity;

pub use authorize::{authorize, Forbidden, RequestAttributes, Verb};
pub use tls::{ServingCertificate, TlsError};

/// Maps a peer's credential to an identity (the binary adapts `pki::Authenticator`).
/// An `Err` is logged at debug level and answered with a bare 401: its text is never
/// sent to the peer.
pub trait Authenticate: Send + Sync + 'static {
    /// The identity of a verified client certificate chain (leaf first, DER).
    fn certificate(&self, chain_der: &[Vec<u8>]) -> Result<Identity, String>;
    /// The identity of a bearer token.
    fn bearer(&self, token: &str) -> Result<Identity, String>;
    /// The identity of a bearer token sent over plain HTTP (a request marked
    /// [`PlainHttp`]); by default the same as over TLS.
    fn bearer_plain(&self, token: &str) -> Result<Identity, String> {
        self.bearer(token)
    }
    /// Whether a connection from `peer` that does not start with a TLS handshake is
    /// served as plain HTTP. By default never: every connection is TLS.
    fn plain_http(&self, peer: SocketAddr) -> bool {
        let _ = peer;
        false
    }
    /// Whether a plain-HTTP request may reach `path` (else it is refused with a 403
    /// before any route sees it). By default no path.
    fn plain_http_path(&self, path: &str) -> bool {
        let _ = path;
        false
    }
}

/// Request extension: the request came over plain HTTP, not TLS (see
/// [`Authenticate::plain_http`]). Routes that treat such requests differently look
/// for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainHttp {
    /// The client's address.
    pub peer: SocketAddr,
}

/// What a server needs to serve TLS and authenticate its clients. The binaries always
/// set it; only tests of the API itself run without.
#[derive(Clone)]
pub struct Security {
    /// The certificate and key the server presents (replaceable while serving).
    pub serving: ServingCertificate,
    /// PEM certificates of the CAs client certificates must chain to (each entry may
    /// hold several). Empty: no client certificates are asked for.
    pub client_cas_pem: Vec<String>,
    /// Maps a verified client certificate or a bearer token to an identity.
    pub authenticator: Arc<dyn Authenticate>,
    /// Routes the binary adds (CA fetch, join, log proxy). They are merged into the
    /// server's router behind the same authentication, reachable by anonymous callers
    /// too: each reads the [`Identity`] request extension and does its own check.
    pub routes: axum::Router,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("serving", &self.serving)
            .field("client_cas", &self.client_cas_pem.len())
            .finish_non_exhaustive()
    }
}

/// The paths an anonymous caller may reach among the server's own routes.
pub const ANONYMOUS_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// Whether an anonymous caller may reach `path` among the server's own routes.
pub fn anonymous_may_reach(path: &str) -> bool {
    ANONYMOUS_PATHS.contains(&path)
}

/// The 401 `Status` of a missing or invalid credential.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(crds::Status::failure(401, "Unauthorized", "Unauthorized")),
    )
        .into_response()
}

/// The 403 `Status` of a plain-HTTP request for a path that is served over TLS only.
pub fn tls_required() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(crds::Status::failure(
            403,
            "Forbidden",
            "this path is served over TLS only: use https",
        )),
    )
        .into_response()
}

/// The identity a network credential maps to; `System` is never one.
pub(crate) fn network_identity(
    answer: Result<Identity, String>,
    credential: &str,
) -> Option<Identity> {
    match answer {
        Ok(Identity::System) => {
            tracing::warn!(
                credential,
                "the authenticator answered the in-process identity for a network credential; refused"
            );
            None
        }
        Ok(identity) => Some(identity),
        Err(e) => {
            tracing::debug!(credential, error = %e, "credential refused");
            None
        }
    }
}

/// Middleware: authenticate an `Authorization: Bearer` header (401 if invalid) and
/// remove it; the request's identity is then the token's, else the connection's.
pub(crate) async fn bearer(
    State(authenticator): State<Arc<dyn Authenticate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(value) = request.headers_mut().remove(header::AUTHORIZATION) else {
        return next.run(request).await;
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let plain = request.extensions().get::<PlainHttp>().is_some();
    let identity = match token {
        Some(token) if plain => network_identity(
            authenticator.bearer_plain(token),
            "bearer token (plain HTTP)",
        ),
        Some(token) => network_identity(authenticator.bearer(token), "bearer token"),
        None => {
            tracing::debug!("an Authorization header that is not a bearer token; refused");
            None
        }
    };
    match identity {
        Some(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None => unauthorized(),
    }
}

/// Middleware over the server's own routes but health and version: an anonymous
/// caller (or a request without an identity) gets a 401.
pub(crate) async fn require_identity(request: Request, next: Next) -> Response {
    match request.extensions().get::<Identity>() {
        Some(identity) if *identity != Identity::Anonymous => next.run(request).await,
        _ if anonymous_may_reach(request.uri().path()) => next.run(request).await,
        _ => unauthorized(),
    }
}
