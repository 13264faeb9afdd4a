//! TLS serving: the serving certificate (replaceable while serving), the rustls server
//! configuration (ring provider, ALPN `http/1.1`, optional client certificates verified
//! against the client CAs), and the accept loop that authenticates each connection's
//! client certificate once and hands its requests to the router with that identity.
//! Where the authenticator admits plain HTTP from a peer ([`Authenticate::plain_http`]),
//! the loop tells the two apart by the connection's first byte ([`is_tls_handshake`]).
//! A [`Drain`] stops the loop for a restart without failing the requests in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pki::Identity;
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use super::{network_identity, tls_required, unauthorized, Authenticate, PlainHttp, Security};

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection: the record type of a handshake.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Whether a connection that starts with `first` is TLS (a handshake record). No
/// plain HTTP request starts so: its first byte is a method's letter.
pub fn is_tls_handshake(first: u8) -> bool {
    first == TLS_HANDSHAKE_BYTE
}

/// How a server stops for a restart without failing what it is doing: it stops
/// accepting connections (clients given several servers move on to the next), lets
/// every request in flight finish and then closes its connection, closes idle
/// keep-alive connections at once, and cuts watches last (their clients resume at
/// another server from the revision they had). Clones share one state.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    stop: CancellationToken,
    /// Requests in flight, watches left out.
    requests: Arc<AtomicUsize>,
}

/// One request in flight, counted while it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drain {
    /// A drain of a server that runs.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Stop accepting and wait until no request but watches is in flight, at most
    /// `grace`; returns how many were still in flight then (cut when the process ends).
    pub async fn drain(&self, grace: Duration) -> usize {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left = self.requests.load(Ordering::SeqCst);
            if left == 0 {
                // The last answers are whole in memory: a moment puts them on the wire.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return self.requests.load(Ordering::SeqCst);
            }
            if tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolves once the server is told to stop.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.stop.clone().cancelled_owned()
    }

    /// Count a request to `uri` as in flight until the guard drops (a watch is not
    /// waited for).
    fn request(&self, uri: &axum::http::Uri) -> Option<InFlight> {
        let watch = uri.query().is_some_and(|q| {
            q.split('&').any(|pair| {
                pair.split_once('=')
                    .is_some_and(|(k, v)| k == "watch" && crate::http::parse_bool(v))
            })
        });
        (!watch).then(|| {
            self.requests.fetch_add(1, Ordering::SeqCst);
            InFlight(self.requests.clone())
        })
    }
}

/// Why a certificate, a key or the TLS configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The serving certificate or its key cannot be presented.
    #[error("the serving certificate: {0}")]
    Serving(#[from] pki::LiveCertificateError),
    /// A client CA is not a valid PEM certificate.
    #[error("client CA #{index} is not usable ({reason}); expected PEM CERTIFICATE blocks")]
    ClientCa {
        /// Its position in `client_cas_pem`.
        index: usize,
        /// What the parser or the root store said.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

/// The certificate chain and key the server presents: a cloneable handle that rustls
/// asks for each new connection, so `replace` takes effect without a restart
/// (connections already open keep theirs).
pub type ServingCertificate = pki::LiveCertificate;

/// The rustls configuration of a secured server: TLS 1.2 and 1.3 with the ring
/// provider, ALPN `http/1.1`, the serving certificate, and client certificates
/// optional but, when presented, verified against `client_cas_pem`.
pub fn server_config(security: &Security) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for (index, pem) in security.client_cas_pem.iter().enumerate() {
        let ca_error = |reason: String| TlsError::ClientCa { index, reason };
        for cert in pki::certificates_of(pem, "client CA").map_err(|e| ca_error(e.to_string()))? {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(Arc::new(security.serving.clone()));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serve `app` on `listener` as the API server serves its own routes: TLS with
/// `security`'s certificate and client CAs, a client certificate authenticated once per
/// connection, a bearer token per request, and the caller's [`Identity`] a request
/// extension (Anonymous without a credential). `security.routes` are served beside
/// `app`. For the other servers of the hierarchy (an agent's endpoint): `app` checks
/// the identity itself. Runs until the process ends.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    security: Security,
) -> Result<(), TlsError> {
    let config = server_config(&security)?;
    let app = app
        .merge(security.routes)
        .layer(axum::middleware::from_fn_with_state(
            security.authenticator.clone(),
            super::bearer,
        ));
    serve(listener, config, security.authenticator, app, Drain::new()).await;
    Ok(())
}

/// Accept TLS connections on `listener` forever, each in a task of its own: the
/// handshake (at most [`HANDSHAKE_TIMEOUT`]), the client certificate authenticated
/// once, then HTTP/1.1 with `app`, every request carrying the connection's
/// [`Identity`]. A failed handshake is logged at debug level and ends only that
/// connection. Returns once `drain` stops it (the listener closed; the connections
/// finish as [`Drain`] says).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    authenticator: Arc<dyn Authenticate>,
    app: axum::Router,
    drain: Drain,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Watch events are small writes that follow each other: without TCP_NODELAY,
        // Nagle holds one back until the previous is acknowledged (40 ms with a
        // delayed ACK on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let authenticator = authenticator.clone();
        let app = app.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            if authenticator.plain_http(peer) {
                let mut first = [0u8; 1];
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
                    Ok(Ok(1)) if !is_tls_handshake(first[0]) => {
                        tracing::debug!(%peer, "plain HTTP connection");
                        let plain = Some(PlainHttp { peer });
                        let identity = Some(Identity::Anonymous);
                        serve_connection(tcp, identity, plain, authenticator, app, peer, drain)
                            .await;
                        return;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "reading the first byte");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no first byte in time");
                        return;
                    }
                }
            }
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    return;
                }
            };
            let identity = connection_identity(&tls, authenticator.as_ref(), peer);
            serve_connection(tls, identity, None, authenticator, app, peer, drain).await;
        });
    }
}

/// The identity of a connection's verified client certificate: `Some(Anonymous)`
/// without one, `None` when the authenticator refuses it.
fn connection_identity(
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    authenticator: &dyn Authenticate,
    peer: SocketAddr,
) -> Option<Identity> {
    match tls.get_ref().1.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
            let identity =
                network_identity(authenticator.certificate(&chain), "client certificate");
            if identity.is_none() {
                tracing::debug!(%peer, "the connection's requests will be refused");
            }
            identity
        }
        _ => Some(Identity::Anonymous),
    }
}

/// Serve HTTP/1.1 on `io` with `app`, every request carrying `identity` (a refused
/// certificate: every request is a 401). A plain-HTTP connection (`plain`) marks each
/// request [`PlainHttp`] and refuses, with a 403, those for paths the authenticator
/// does not admit over plain HTTP. When `drain` stops the server, the connection
/// closes once its request in flight is answered (at once when idle).
async fn serve_connection<I>(
    io: I,
    identity: Option<Identity>,
    plain: Option<PlainHttp>,
    authenticator: Arc<dyn Authenticate>,
    app: axum::Router,
    peer: SocketAddr,
    drain: Drain,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stop = drain.stop.clone();
    let service = tower::service_fn(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let identity = identity.clone();
            let authenticator = authenticator.clone();
            let in_flight = drain.request(request.uri());
            async move {
                let _in_flight = in_flight;
                let Some(identity) = identity else {
                    return Ok(unauthorized());
                };
                if let Some(plain) = plain {
                    if !authenticator.plain_http_path(request.uri().path()) {
                        tracing::debug!(%peer, path = request.uri().path(), "plain HTTP refused for this path");
                        return Ok(tls_required());
                    }
                    request.extensions_mut().insert(plain);
                }
                request.extensions_mut().insert(identity);
                tower::ServiceExt::oneshot(app, request).await
            }
        },
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
