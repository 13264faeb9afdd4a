//! Who may use Oakestra's API here: the login (the generated admin password, and in
//! `oakestra up` Oakestra's fixed Admin/Admin over plain HTTP from this machine only),
//! the sessions it hands out as bearer tokens, and the authenticator that serves them
//! beside the tier's own credentials and decides what plain HTTP may reach.
//!
//! The rules are pure functions ([`plain_peer`], [`oakestra_path`], [`login`]) with
//! tables; [`Gate`] applies them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver::auth::Authenticate;
use pki::Identity;
use sha2::{Digest, Sha256};

/// The user name of the administrator's password login.
pub const ADMIN: &str = "admin";
/// Oakestra's fixed login, sent by its `oak` CLI (`oakestra up` only, plain HTTP from
/// loopback only).
pub const OAKESTRA_DEFAULT: (&str, &str) = ("Admin", "Admin");
/// The file in a root's data directory that holds the administrator's password.
pub const PASSWORD_FILE: &str = "oakestra-api-password";
/// How long an access token is valid.
pub const ACCESS_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// How long a refresh token is valid.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Where our session tokens start, so they are never taken for the tier's own tokens.
const TOKEN_PREFIX: &str = "oak.";

/// Why the API's login could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password file could not be read or written.
    #[error("the Oakestra API's password file {path}: {reason}")]
    Password {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No random bytes.
    #[error("drawing a random secret: {0}")]
    Random(#[from] pki::RandomError),
}

/// Whether plain HTTP from `peer` may be served: only from this machine (loopback,
/// IPv4-mapped included).
pub fn plain_peer(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// Whether `path` is one of Oakestra's API paths (the only ones plain HTTP reaches):
/// `/api/` followed by one of Oakestra's collections. `/api/v1/…` (Kubernetes' core
/// group) is not, nor is a path with `.`/`..` segments or escapes.
pub fn oakestra_path(path: &str) -> bool {
    const COLLECTIONS: [&str; 6] = [
        "auth",
        "application",
        "applications",
        "service",
        "services",
        "clusters",
    ];
    let Some(rest) = path.strip_prefix("/api/") else {
        return false;
    };
    if path.contains('%') || path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let first = rest.split('/').next().unwrap_or_default();
    COLLECTIONS.contains(&first)
}

/// How a request reached the server, as far as the login cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS (from anywhere).
    Tls,
    /// Plain HTTP (served to loopback peers only, in `up`).
    Plain,
}

/// What a login may give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A session valid over TLS and plain HTTP.
    Full,
    /// A session valid over plain HTTP only (from this machine): Oakestra's fixed pair.
    PlainOnly,
}

/// The login's decision: the administrator's password gives a session; Oakestra's
/// fixed Admin/Admin gives one only when `default_pair` is allowed (`oakestra up`) and
/// the request came over plain HTTP (which only loopback peers reach), and that session
/// stays plain-HTTP-only; anything else is refused.
pub fn login(
    user: &str,
    password: &str,
    admin_password: &str,
    default_pair: bool,
    transport: Transport,
) -> Option<Grant> {
    if user == ADMIN && !admin_password.is_empty() && constant_eq(password, admin_password) {
        return Some(Grant::Full);
    }
    if default_pair && transport == Transport::Plain && (user, password) == OAKESTRA_DEFAULT {
        return Some(Grant::PlainOnly);
    }
    None
}

/// Equality whose time does not depend on where the strings first differ.
fn constant_eq(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The administrator's password in `data_dir`, made (24 random characters, file mode
/// 0600) at the first start.
pub fn admin_password(data_dir: &Path) -> Result<(PathBuf, String), AuthError> {
    let path = data_dir.join(PASSWORD_FILE);
    let failed = |reason: String| AuthError::Password {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((path.clone(), text.trim().into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    let password = pki::random_string(24)?;
    pki::write_private(&path, format!("{password}\n").as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    Ok((path, password))
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Access,
    Refresh,
}

#[derive(Debug, Clone)]
struct Session {
    grant: Grant,
    usage: Use,
    expires: Instant,
}

/// The sessions handed out by the login, in memory (a restarted root asks for a new
/// login), keyed by the SHA-256 of the token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

/// The tokens of one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The bearer token.
    pub access: String,
    /// The token `POST /api/auth/refresh` takes for a new access token.
    pub refresh: String,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    fn issue(&self, grant: Grant, usage: Use, lifetime: Duration) -> Result<String, AuthError> {
        let token = format!("{TOKEN_PREFIX}{}", pki::random_string(40)?);
        let now = Instant::now();
        let mut map = self.by_hash.lock().expect("sessions lock");
        map.retain(|_, s| s.expires > now);
        map.insert(
            hash(&token),
            Session {
                grant,
                usage,
                expires: now + lifetime,
            },
        );
        Ok(token)
    }

    /// An access and a refresh token for `grant`.
    pub fn login(&self, grant: Grant) -> Result<Tokens, AuthError> {
        Ok(Tokens {
            access: self.issue(grant, Use::Access, ACCESS_LIFETIME)?,
            refresh: self.issue(grant, Use::Refresh, REFRESH_LIFETIME)?,
        })
    }

    /// A new access token for a valid refresh token (of the same grant), or `None`.
    /// A plain-HTTP-only refresh token works over plain HTTP only.
    pub fn refresh(
        &self,
        refresh: &str,
        transport: Transport,
    ) -> Result<Option<String>, AuthError> {
        let grant = match self.find(refresh, Use::Refresh) {
            Some(Grant::PlainOnly) if transport == Transport::Tls => return Ok(None),
            Some(grant) => grant,
            None => return Ok(None),
        };
        self.issue(grant, Use::Access, ACCESS_LIFETIME).map(Some)
    }

    fn find(&self, token: &str, usage: Use) -> Option<Grant> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let map = self.by_hash.lock().expect("sessions lock");
        map.get(&hash(token))
            .filter(|s| s.usage == usage && s.expires > Instant::now())
            .map(|s| s.grant)
    }

    /// Whether `token` is one of ours at all (valid or not).
    fn ours(token: &str) -> bool {
        token.starts_with(TOKEN_PREFIX)
    }
}

/// The tier's authenticator with the API's sessions beside it: a session's access
/// token is the administrator (`oakestra:admin`); a plain-HTTP-only one only over
/// plain HTTP. Plain HTTP itself is served only when `plain` is on (`oakestra up`),
/// only to loopback peers ([`plain_peer`]) and only for Oakestra's paths
/// ([`oakestra_path`]).
pub struct Gate {
    /// The tier's own authenticator (certificates, admin tokens).
    pub inner: Arc<dyn Authenticate>,
    /// The login's sessions.
    pub sessions: Arc<Sessions>,
    /// Whether plain HTTP is served at all.
    pub plain: bool,
}

impl Gate {
    fn session(&self, token: &str, transport: Transport) -> Result<Identity, String> {
        match (self.sessions.find(token, Use::Access), transport) {
            (Some(Grant::Full), _) | (Some(Grant::PlainOnly), Transport::Plain) => {
                Ok(Identity::admin())
            }
            (Some(Grant::PlainOnly), Transport::Tls) => Err(
                "a token of Oakestra's default login is valid over plain HTTP from this machine only"
                    .into(),
            ),
            (None, _) => Err("an unknown or expired Oakestra API token".into()),
        }
    }
}

impl Authenticate for Gate {
    fn certificate(&self, chain_der: &[Vec<u8>]) -> Result<Identity, String> {
        self.inner.certificate(chain_der)
    }

    fn bearer(&self, token: &str) -> Result<Identity, String> {
        if Sessions::ours(token) {
            return self.session(token, Transport::Tls);
        }
        self.inner.bearer(token)
    }

    fn bearer_plain(&self, token: &str) -> Result<Identity, String> {
        if Sessions::ours(token) {
            return self.session(token, Transport::Plain);
        }
        self.inner.bearer_plain(token)
    }

    fn plain_http(&self, peer: SocketAddr) -> bool {
        self.plain && plain_peer(peer)
    }

    fn plain_http_path(&self, path: &str) -> bool {
        self.plain && oakestra_path(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_peers_only() {
        let cases = [
            ("127.0.0.1:5000", true),
            ("127.1.2.3:5000", true),
            ("[::1]:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("10.0.0.5:5000", false),
            ("192.168.1.2:5000", false),
            ("[::ffff:10.0.0.5]:5000", false),
            ("[2001:db8::1]:5000", false),
            ("0.0.0.0:5000", false),
        ];
        for (peer, want) in cases {
            assert_eq!(plain_peer(peer.parse().unwrap()), want, "{peer}");
        }
    }

    #[test]
    fn plain_http_reaches_oakestras_paths_only() {
        let cases = [
            ("/api/auth/login", true),
            ("/api/application/", true),
            ("/api/application", true),
            ("/api/applications/admin", true),
            ("/api/service/x/instance/0", true),
            ("/api/services/", true),
            ("/api/clusters/active", true),
            ("/api/v1/namespaces", false),
            ("/api/v1", false),
            ("/api", false),
            ("/api/", false),
            ("/apis/oakestra.io/v1/services", false),
            ("/healthz", false),
            ("/join", false),
            ("/api/applicationsx", false),
            ("/api/applications/../v1/namespaces", false),
            ("/api/service/%2e%2e/v1", false),
        ];
        for (path, want) in cases {
            assert_eq!(oakestra_path(path), want, "{path}");
        }
    }

    #[test]
    fn the_login_decides_by_password_mode_and_transport() {
        use Transport::{Plain, Tls};
        let pw = "s3cret";
        let cases = [
            ("admin", "s3cret", false, Tls, Some(Grant::Full)),
            ("admin", "s3cret", true, Plain, Some(Grant::Full)),
            ("admin", "wrong", true, Plain, None),
            ("Admin", "s3cret", false, Tls, None),
            // Oakestra's fixed pair: `up` and plain HTTP (loopback) only.
            ("Admin", "Admin", true, Plain, Some(Grant::PlainOnly)),
            ("Admin", "Admin", true, Tls, None),
            ("Admin", "Admin", false, Plain, None),
            ("Admin", "Admin", false, Tls, None),
            ("admin", "Admin", true, Plain, None),
        ];
        for (user, password, up, transport, want) in cases {
            assert_eq!(
                login(user, password, pw, up, transport),
                want,
                "{user}/{password} up={up} {transport:?}"
            );
        }
        assert_eq!(
            login("admin", "", "", true, Plain),
            None,
            "an empty password never matches"
        );
    }

    struct Refuse;
    impl Authenticate for Refuse {
        fn certificate(&self, _: &[Vec<u8>]) -> Result<Identity, String> {
            Err("no".into())
        }
        fn bearer(&self, _: &str) -> Result<Identity, String> {
            Err("no".into())
        }
    }

    #[test]
    fn sessions_are_confined_as_granted() {
        let sessions = Arc::new(Sessions::default());
        let gate = Gate {
            inner: Arc::new(Refuse),
            sessions: sessions.clone(),
            plain: true,
        };
        let full = sessions.login(Grant::Full).unwrap();
        let plain = sessions.login(Grant::PlainOnly).unwrap();
        assert_eq!(gate.bearer(&full.access), Ok(Identity::admin()));
        assert_eq!(gate.bearer_plain(&full.access), Ok(Identity::admin()));
        assert!(gate.bearer(&plain.access).is_err(), "plain-only over TLS");
        assert_eq!(gate.bearer_plain(&plain.access), Ok(Identity::admin()));
        // A refresh token is no access token.
        assert!(gate.bearer(&full.refresh).is_err());
        assert!(gate.bearer("oak.unknown").is_err());
        // A new access token from the refresh token, confined as the login was.
        let again = sessions
            .refresh(&full.refresh, Transport::Tls)
            .unwrap()
            .unwrap();
        assert_eq!(gate.bearer(&again), Ok(Identity::admin()));
        assert_eq!(
            sessions.refresh(&plain.refresh, Transport::Tls).unwrap(),
            None
        );
        let p = sessions
            .refresh(&plain.refresh, Transport::Plain)
            .unwrap()
            .unwrap();
        assert!(gate.bearer(&p).is_err());
        assert_eq!(
            sessions.refresh(&full.access, Transport::Tls).unwrap(),
            None
        );
        // Plain HTTP is off outside `up`, whatever the peer.
        let off = Gate {
            inner: Arc::new(Refuse),
            sessions,
            plain: false,
        };
        assert!(!off.plain_http("127.0.0.1:1".parse().unwrap()));
        assert!(!off.plain_http_path("/api/auth/login"));
        assert!(gate.plain_http("127.0.0.1:1".parse().unwrap()));
        assert!(!gate.plain_http("10.1.1.1:1".parse().unwrap()));
    }

    #[test]
    fn the_password_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (path, first) = admin_password(dir.path()).unwrap();
        assert_eq!(first.len(), 24);
        let (_, second) = admin_password(dir.path()).unwrap();
        assert_eq!(first, second);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
