//! Joining a tier, and renewing what joining gave, over HTTPS.
//!
//! The tier that admits (the root for clusters, a cluster for nodes) serves:
//! - `GET /cacerts`: its CA certificate, to anyone (it is public);
//! - `POST /oakestra/v1/join`: a join token, the member's name and secret and a CSR
//!   (nodes also one for their agent's serving certificate, clusters also their own
//!   CA) → certificates whose subjects this tier chooses;
//! - `POST /oakestra/v1/renew`: authenticated with the member's current certificate, a
//!   new CSR (or two) → certificates for the same identity.
//!
//! The joining side ([`join`]) fetches `/cacerts` without trusting the server, compares
//! the CA's hash with the one the token carries and aborts on a mismatch **before it
//! sends anything**; then it verifies the server against that CA and only then sends
//! the token. The member's secret (kept by the member, hashed by the tier) stops a
//! second holder of the token from taking a name that has joined before.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use pki::{Claim, Identity, JoinToken, TokenUsage, Usage as CsrUsage};
use serde::{Deserialize, Serialize};

use crate::dir::{Authority, TierPaths, Upstream};
use crate::TrustError;

/// Where a tier serves its CA certificate.
pub const CA_PATH: &str = "/cacerts";
/// Where a tier takes join requests.
pub const JOIN_PATH: &str = "/oakestra/v1/join";
/// Where a member renews its certificates.
pub const RENEW_PATH: &str = "/oakestra/v1/renew";

/// The DNS name in a node's agent serving certificate: the cluster dials the agent by
/// its address but checks this name, which no other certificate of the cluster's CA
/// carries (so a node's certificate can never pass for the cluster's API).
pub fn agent_server_name(node: &str) -> String {
    format!("{node}.node.oakestra")
}

/// A member's request to join.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The bearer part of the join token, `ID.SECRET`.
    pub token: String,
    /// The name the member joins as (its Cluster or Node name).
    pub name: String,
    /// The member's own secret, the same at every join of this name.
    pub secret: String,
    /// A PEM CSR for its client certificate (only its public key is used).
    pub csr: String,
    /// A PEM CSR for its serving certificate (nodes: the agent's endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_csr: Option<String>,
    /// The member's own CA certificate (clusters), which the root trusts for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// A member's request to renew its certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewRequest {
    /// A PEM CSR for the new client certificate.
    pub csr: String,
    /// A PEM CSR for a new serving certificate (nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_csr: Option<String>,
}

/// What a join or renewal gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    /// The client certificate (PEM).
    pub certificate: String,
    /// The serving certificate (PEM), when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_certificate: Option<String>,
    /// The tier's CA certificate (PEM).
    pub ca: String,
}

/// Who joins a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// Cluster orchestrators join the root.
    Clusters,
    /// Worker nodes join a cluster.
    Nodes,
}

impl Members {
    fn identity(self, name: &str) -> Identity {
        match self {
            Members::Clusters => Identity::Cluster { name: name.into() },
            Members::Nodes => Identity::Node { name: name.into() },
        }
    }

    /// The member's name, if `identity` is one of these members.
    fn member_name(self, identity: &Identity) -> Option<&str> {
        match (self, identity) {
            (Members::Clusters, Identity::Cluster { name })
            | (Members::Nodes, Identity::Node { name }) => Some(name),
            _ => None,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Members::Clusters => "cluster",
            Members::Nodes => "node",
        }
    }
}

/// The join and renewal service of a tier.
pub struct JoinService {
    /// The tier's authority (CA, tokens, members).
    pub authority: Arc<Authority>,
    /// Who joins it.
    pub members: Members,
    /// Lifetime of the client certificates it issues.
    pub lifetime: Duration,
}

/// The routes of [`JoinService`]: `/cacerts`, join and renew.
pub fn routes(service: Arc<JoinService>) -> Router {
    Router::new()
        .route(CA_PATH, get(ca))
        .route(JOIN_PATH, post(join_handler))
        .route(RENEW_PATH, post(renew_handler))
        .with_state(service)
}

async fn ca(State(service): State<Arc<JoinService>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        service.authority.ca.cert_pem().to_string(),
    )
        .into_response()
}

/// A Kubernetes `Status` answer.
fn refuse(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        Json(crds::Status::failure(code.as_u16(), reason, message)),
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    refuse(StatusCode::BAD_REQUEST, "BadRequest", message)
}

async fn join_handler(
    State(service): State<Arc<JoinService>>,
    Json(request): Json<JoinRequest>,
) -> Response {
    let noun = service.members.noun();
    let authority = &service.authority;
    if let Err(e) = authority
        .tokens
        .verify(&request.token, TokenUsage::Join, chrono::Utc::now())
    {
        tracing::info!(name = %request.name, error = %e, "join refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("the join token is not valid here ({e}); ask the administrator for a current one (oakestra token create)"),
        );
    }
    if let Err(e) = crds::validate::name(&request.name) {
        return bad_request(format!("name {:?}: {e}", request.name));
    }
    if request.secret.len() < 16 {
        return bad_request("secret: must be at least 16 characters".into());
    }
    if service.members == Members::Clusters && request.ca.is_none() {
        return bad_request("ca: a cluster joins with its own CA certificate".into());
    }
    match authority.members.claim(&request.name, &request.secret) {
        Ok(Claim::New) => {
            tracing::info!(member = %request.name, "{noun} joined for the first time")
        }
        Ok(Claim::Known) => tracing::info!(member = %request.name, "{noun} joined again"),
        Err(pki::TokenError::NameTaken { .. }) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{noun} {:?} has joined before with another secret: a second holder of the token cannot take its name (to give the name to a new {noun}, run `oakestra member forget {}` where this tier runs)",
                    request.name, request.name
                ),
            )
        }
        Err(e) => return internal(e),
    }
    if let Some(member_ca) = &request.ca {
        if let Err(e) = pki::ca_hash(member_ca) {
            return bad_request(format!("ca: not a CA certificate: {e}"));
        }
        let path = authority.paths.member_ca(&request.name);
        if let Err(e) = pki::write_private(&path, member_ca.as_bytes()) {
            return internal(e);
        }
    }
    issue(
        &service,
        &request.name,
        &request.csr,
        request.serving_csr.as_deref(),
    )
}

async fn renew_handler(
    State(service): State<Arc<JoinService>>,
    Extension(identity): Extension<Identity>,
    Json(request): Json<RenewRequest>,
) -> Response {
    let Some(name) = service.members.member_name(&identity) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "User {:?} cannot renew: only a {} renews its own certificates, with its current one",
                identity.user(),
                service.members.noun()
            ),
        );
    };
    let name = name.to_string();
    issue(
        &service,
        &name,
        &request.csr,
        request.serving_csr.as_deref(),
    )
}

/// Sign the member `name`'s CSRs with the tier's CA.
fn issue(service: &JoinService, name: &str, csr: &str, serving_csr: Option<&str>) -> Response {
    let ca = &service.authority.ca;
    let identity = service.members.identity(name);
    let certificate = match ca.sign_csr(csr, CsrUsage::Client(identity), service.lifetime) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("csr: {e}")),
    };
    let serving_certificate = match (service.members, serving_csr) {
        (Members::Nodes, Some(csr)) => {
            let sans = vec![agent_server_name(name)];
            match ca.sign_csr(csr, CsrUsage::Server { sans }, service.lifetime) {
                Ok(c) => Some(c),
                Err(e) => return bad_request(format!("servingCsr: {e}")),
            }
        }
        _ => None,
    };
    Json(Issued {
        certificate,
        serving_certificate,
        ca: ca.cert_pem().to_string(),
    })
    .into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "join failed");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("internal error: {e}"),
    )
}

/// Why joining or renewing failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The join token does not parse.
    #[error("--token: {0}")]
    Token(#[from] pki::TokenError),
    /// The server's CA is not the one the token pins: nothing was sent.
    #[error("the server at {url} presents CA {presented}, but the join token pins {pinned}: wrong server, or wrong token (nothing was sent)")]
    CaMismatch {
        /// The server.
        url: String,
        /// The hash of the CA it presented.
        presented: String,
        /// The hash the token carries.
        pinned: String,
    },
    /// No stored credentials and no token to join with.
    #[error("this {noun} has not joined {url} yet: pass --token (the join token `oakestra token create` prints where the tier above runs)")]
    NoToken {
        /// What joins.
        noun: &'static str,
        /// Where to.
        url: String,
    },
    /// The server could not be reached, or refused.
    #[error("joining {url}: {message}")]
    Request {
        /// The server.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A certificate operation failed.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// Fetch the CA certificate `url` serves, trusting nothing: the caller must check it
/// against a pin before it trusts it. Of several servers (`URL,URL`), the first that
/// answers (they are one tier: one CA).
pub async fn fetch_ca_unverified(url: &str) -> Result<String, JoinError> {
    let servers = client::endpoints(url).map_err(|e| JoinError::Request {
        url: url.into(),
        message: e.to_string(),
    })?;
    let mut failure = None;
    for server in &servers {
        match fetch_ca_from(server).await {
            Ok(ca) => return Ok(ca),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.expect("at least one server"))
}

/// Fetch the CA certificate the one server `url` serves, trusting nothing.
async fn fetch_ca_from(url: &str) -> Result<String, JoinError> {
    let request_error = |message: String| JoinError::Request {
        url: url.to_string(),
        message,
    };
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(unverified_tls())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| request_error(e.to_string()))?;
    let answer = http
        .get(format!("{}{CA_PATH}", url.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| request_error(innermost(&e)))?;
    if !answer.status().is_success() {
        return Err(request_error(format!(
            "{CA_PATH} answered {}",
            answer.status()
        )));
    }
    answer
        .text()
        .await
        .map_err(|e| request_error(innermost(&e)))
}

/// The innermost cause of `e` (e.g. "Connection refused (os error 111)").
fn innermost(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Join the tier at `url` as `name` with `token`; `serving` asks for a serving
/// certificate (nodes), `own_ca` is the joiner's CA (clusters).
pub async fn join(
    url: &str,
    token: &JoinToken,
    name: &str,
    secret: &str,
    serving: bool,
    own_ca: Option<&str>,
) -> Result<Upstream, JoinError> {
    let presented = fetch_ca_unverified(url).await?;
    let presented_hash = pki::ca_hash(&presented)?;
    if presented_hash != token.ca_hash {
        return Err(JoinError::CaMismatch {
            url: url.into(),
            presented: presented_hash,
            pinned: token.ca_hash.clone(),
        });
    }
    let pinned = client::Client::with_tls(
        url,
        client::tls::TlsOptions {
            ca_pem: Some(presented.clone()),
            identity: None,
            bearer: None,
            server_name: None,
        },
    )
    .map_err(|e| JoinError::Request {
        url: url.into(),
        message: e.to_string(),
    })?;
    let (key_pem, csr) = pki::Csr::generate()?;
    let serving_key = if serving {
        Some(pki::Csr::generate()?)
    } else {
        None
    };
    let request = JoinRequest {
        token: token.bearer(),
        name: name.into(),
        secret: secret.into(),
        csr,
        serving_csr: serving_key.as_ref().map(|(_, csr)| csr.clone()),
        ca: own_ca.map(String::from),
    };
    let issued = send(&pinned, JOIN_PATH, &request).await?;
    Ok(upstream_from(
        presented,
        key_pem,
        serving_key.map(|(k, _)| k),
        issued,
    ))
}

/// Renew `current` at the tier `client` reaches (authenticated with `current`).
pub async fn renew(client: &client::Client, current: &Upstream) -> Result<Upstream, JoinError> {
    let (key_pem, csr) = pki::Csr::generate()?;
    let serving_key = if current.serving.is_some() {
        Some(pki::Csr::generate()?)
    } else {
        None
    };
    let request = RenewRequest {
        csr,
        serving_csr: serving_key.as_ref().map(|(_, csr)| csr.clone()),
    };
    let issued = send(client, RENEW_PATH, &request).await?;
    Ok(upstream_from(
        current.ca_pem.clone(),
        key_pem,
        serving_key.map(|(k, _)| k),
        issued,
    ))
}

fn upstream_from(
    ca_pem: String,
    key_pem: String,
    serving_key: Option<String>,
    issued: Issued,
) -> Upstream {
    Upstream {
        ca_pem,
        client: pki::CertifiedKey {
            cert_pem: issued.certificate,
            key_pem,
        },
        serving: match (serving_key, issued.serving_certificate) {
            (Some(key_pem), Some(cert_pem)) => Some(pki::CertifiedKey { cert_pem, key_pem }),
            _ => None,
        },
    }
}

async fn send<T: Serialize>(
    client: &client::Client,
    path: &str,
    body: &T,
) -> Result<Issued, JoinError> {
    let body = serde_json::to_value(body).expect("a request serializes");
    let answer = client
        .post_json(path, &body)
        .await
        .map_err(|e| JoinError::Request {
            url: client.base().into(),
            message: e.to_string(),
        })?;
    serde_json::from_value(answer).map_err(|e| JoinError::Request {
        url: client.base().into(),
        message: format!("unexpected answer: {e}"),
    })
}

/// What joining the tier above takes: where it is, the token (needed the first time
/// only), the name and what to ask for.
pub struct Joining<'a> {
    /// The tier above's API URL (`https://…`).
    pub url: &'a str,
    /// The join token, if given.
    pub token: Option<&'a str>,
    /// The name to join as.
    pub name: &'a str,
    /// Clusters or nodes.
    pub members: Members,
    /// The joiner's own CA (clusters).
    pub own_ca: Option<&'a str>,
}

/// The credentials of this tier at the tier above: those stored under `paths` if it
/// joined before, else those a join with the token gives (then stored).
pub async fn credentials(paths: &TierPaths, joining: Joining<'_>) -> Result<Upstream, TrustError> {
    if let Some(stored) = Upstream::load(paths)? {
        if let Some(token) = joining.token {
            // A token for another tier above (another CA) means: join that one.
            let token: JoinToken = token.parse().map_err(JoinError::Token)?;
            if pki::ca_hash(&stored.ca_pem)? == token.ca_hash {
                return Ok(stored);
            }
        } else {
            return Ok(stored);
        }
    }
    let Some(token) = joining.token else {
        return Err(JoinError::NoToken {
            noun: joining.members.noun(),
            url: joining.url.into(),
        }
        .into());
    };
    let token: JoinToken = token.parse().map_err(JoinError::Token)?;
    let secret = Upstream::secret(paths)?;
    let upstream = join(
        joining.url,
        &token,
        joining.name,
        &secret,
        joining.members == Members::Nodes,
        joining.own_ca,
    )
    .await?;
    upstream.save(paths)?;
    tracing::info!(url = joining.url, name = joining.name, "joined");
    Ok(upstream)
}

/// The shortest wait before a renewal.
const MIN_RENEWAL_WAIT: Duration = Duration::from_secs(1);

/// Renew the stored credentials at two thirds of the client certificate's lifetime
/// until `shutdown`, swapping the renewed certificates into `identity` (the client's)
/// and `serving` (a server's), and storing them under `paths`.
pub async fn keep_renewed(
    paths: TierPaths,
    client: client::Client,
    identity: client::tls::ClientCertificate,
    serving: Option<apiserver::auth::ServingCertificate>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let current = match Upstream::load(&paths) {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading the stored certificates; not renewing them");
                return;
            }
        };
        // At least a second apart: a certificate whose renewal time has passed at once
        // (a lifetime of seconds, in tests) must not make this spin.
        let wait = match pki::CertInfo::parse(&current.client.cert_pem) {
            Ok(info) => (pki::renew_at(&info) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default(),
            Err(_) => Duration::ZERO,
        }
        .max(MIN_RENEWAL_WAIT);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&paths, &client, &current, &identity, serving.as_ref()).await {
            Ok(()) => tracing::info!(url = client.base(), "renewed the certificates"),
            Err(e) => {
                tracing::warn!(url = client.base(), error = %e, "renewing the certificates failed; trying again in 30 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
}

async fn renew_once(
    paths: &TierPaths,
    client: &client::Client,
    current: &Upstream,
    identity: &client::tls::ClientCertificate,
    serving: Option<&apiserver::auth::ServingCertificate>,
) -> Result<(), TrustError> {
    let renewed = renew(client, current).await?;
    renewed.save(paths)?;
    identity
        .replace(&renewed.client.cert_pem, &renewed.client.key_pem)
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    if let (Some(handle), Some(cert)) = (serving, &renewed.serving) {
        handle
            .replace(&cert.cert_pem, &cert.key_pem)
            .map_err(|e| TrustError::Tls(e.to_string()))?;
    }
    Ok(())
}

/// TLS that accepts any server certificate (but still checks the handshake's
/// signatures): only for fetching a CA that is then checked against a pin.
fn unverified_tls() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A verifier that takes any certificate: the pin check replaces it.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
