//! Joining a tier over real TLS: an API server secured as `oakestra root` secures its
//! own (its authority, the join routes, the authenticator) on a free loopback port, and
//! the joining side as `oakestra cluster` and `oakestra worker` run it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apiserver::{Server, ServerConfig, StoreConfig};
use pki::{CertInfo, Identity, JoinToken, TokenUsage, Trust, Vouch};
use trust::join::{Joining, Members};
use trust::{Authority, TierPaths};

/// A tier admitting `members` on a free port, counting the join requests it receives.
struct Tier {
    authority: Arc<Authority>,
    server: Server,
    joins: Arc<AtomicUsize>,
}

impl Tier {
    async fn start(dir: &Path, members: Members, lifetime: Duration) -> Tier {
        let authority = Arc::new(
            Authority::open(
                TierPaths::new(dir.join("tier")),
                "oakestra test CA",
                &Identity::Root,
                &["127.0.0.1".to_string()],
            )
            .unwrap(),
        );
        let joins = Arc::new(AtomicUsize::new(0));
        let counted = joins.clone();
        let routes = trust::join::routes(Arc::new(trust::join::JoinService {
            authority: authority.clone(),
            members,
            lifetime,
        }))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.uri().path() == trust::join::JOIN_PATH {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            },
        ));
        let vouch = match members {
            Members::Clusters => Vouch::Cluster,
            Members::Nodes => Vouch::Node,
        };
        let authenticator = pki::Authenticator::new(
            vec![Trust {
                ca_pem: authority.ca.cert_pem().to_string(),
                allows: vec![Vouch::Admin, vouch],
            }],
            Some(pki::TokenStore::open(&authority.paths.tokens()).unwrap()),
        )
        .unwrap();
        let (security, _) =
            trust::authn::security(&authority.serving, authenticator, routes).unwrap();
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            StoreConfig::Embedded(dir.join("store")),
            ServerConfig {
                security: Some(security),
                ..ServerConfig::default()
            },
        )
        .await
        .unwrap();
        Tier {
            authority,
            server,
            joins,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    fn token(&self) -> String {
        self.authority.join_token().unwrap()
    }

    fn joining<'a>(&'a self, url: &'a str, token: &'a str, name: &'a str) -> Joining<'a> {
        Joining {
            url,
            token: Some(token),
            name,
            members: Members::Clusters,
            own_ca: Some(self.authority.ca.cert_pem()),
        }
    }
}

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

#[tokio::test]
async fn a_cluster_joins_once_and_its_certificate_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::start(dir.path(), Members::Clusters, YEAR).await;
    let (url, token) = (tier.url(), tier.token());
    let member = TierPaths::new(dir.path().join("c1"));

    let upstream = trust::join::credentials(&member, tier.joining(&url, &token, "c1"))
        .await
        .unwrap();
    let info = CertInfo::parse(&upstream.client.cert_pem).unwrap();
    assert_eq!(
        (info.common_name.as_str(), info.organizations.clone()),
        ("oakestra:cluster:c1", vec!["oakestra:clusters".to_string()])
    );
    assert_eq!(upstream.ca_pem, tier.authority.ca.cert_pem());
    // The cluster's own CA is kept at the tier, for reaching its API later.
    assert_eq!(
        std::fs::read_to_string(tier.authority.paths.member_ca("c1")).unwrap(),
        tier.authority.ca.cert_pem()
    );

    // The certificate works: the cluster may create its own Cluster, not another's.
    let (tls, _) = upstream.tls().unwrap();
    let client = client::Client::with_tls(&url, tls).unwrap();
    let clusters: client::Api<crds::Cluster> = client.api(None);
    clusters
        .create(&crds::Cluster::new("c1", Default::default()))
        .await
        .unwrap();
    let other = clusters
        .create(&crds::Cluster::new("c2", Default::default()))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Some(403), "{other}");

    // A second start finds the stored credentials and does not join again.
    let again = trust::join::credentials(&member, tier.joining(&url, &token, "c1"))
        .await
        .unwrap();
    assert_eq!(again.client.cert_pem, upstream.client.cert_pem);
    assert_eq!(tier.joins.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_wrong_ca_hash_aborts_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::start(dir.path(), Members::Clusters, YEAR).await;
    let url = tier.url();
    let mut token: JoinToken = tier.token().parse().unwrap();
    token.ca_hash = pki::CertificateAuthority::create("someone else's CA")
        .unwrap()
        .hash();

    let member = TierPaths::new(dir.path().join("c1"));
    let error = trust::join::credentials(&member, tier.joining(&url, &token.to_string(), "c1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pins") && error.contains("nothing was sent"),
        "{error}"
    );
    assert_eq!(
        tier.joins.load(Ordering::SeqCst),
        0,
        "a join request arrived"
    );
    assert!(trust::Upstream::load(&member).unwrap().is_none());
}

#[tokio::test]
async fn unknown_expired_and_admin_tokens_do_not_join() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::start(dir.path(), Members::Clusters, YEAR).await;
    let url = tier.url();
    let hash = tier.authority.ca.hash();
    let tokens = &tier.authority.tokens;
    let unknown = JoinToken::generate(&hash).unwrap().to_string();
    let expiring = tokens
        .create(TokenUsage::Join, &hash, Some(Duration::from_secs(1)), "")
        .unwrap()
        .to_string();
    let admin = tokens
        .create(TokenUsage::Admin, &hash, None, "")
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    for (what, token) in [
        ("unknown", unknown),
        ("expired", expiring),
        ("admin", admin),
    ] {
        let member = TierPaths::new(dir.path().join(what));
        let error = trust::join::credentials(&member, tier.joining(&url, &token, "c1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the join token is not valid here"),
            "{what}: {error}"
        );
    }
    assert_eq!(tier.joins.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_name_that_joined_stays_with_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::start(dir.path(), Members::Clusters, YEAR).await;
    let (url, token) = (tier.url(), tier.token());
    trust::join::credentials(
        &TierPaths::new(dir.path().join("first")),
        tier.joining(&url, &token, "c1"),
    )
    .await
    .unwrap();
    // Another holder of the same token, with its own secret, asks for the same name.
    let error = trust::join::credentials(
        &TierPaths::new(dir.path().join("second")),
        tier.joining(&url, &token, "c1"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("has joined before with another secret"),
        "{error}"
    );
    // The same holder (same secret) may join again, e.g. after losing its certificates.
    let first = TierPaths::new(dir.path().join("first"));
    std::fs::remove_file(first.upstream().join("ca.crt")).unwrap();
    trust::join::credentials(&first, tier.joining(&url, &token, "c1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_csr_asking_for_admin_gets_the_members_identity_only() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::start(dir.path(), Members::Nodes, YEAR).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oakestra:admin");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "oakestra:masters");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let token: JoinToken = tier.token().parse().unwrap();
    let request = serde_json::json!({
        "token": token.bearer(),
        "name": "n1",
        "secret": "0123456789abcdef0123",
        "csr": csr,
        "servingCsr": csr,
    });
    let ca = tier.authority.ca.cert_pem().to_string();
    let client = client::Client::with_tls(
        &tier.url(),
        client::tls::TlsOptions {
            ca_pem: Some(ca),
            ..Default::default()
        },
    )
    .unwrap();
    let issued: trust::join::Issued = serde_json::from_value(
        client
            .post_json(trust::join::JOIN_PATH, &request)
            .await
            .unwrap(),
    )
    .unwrap();
    let cert = CertInfo::parse(&issued.certificate).unwrap();
    assert_eq!(cert.common_name, "oakestra:node:n1");
    assert_eq!(cert.organizations, vec!["oakestra:nodes".to_string()]);
    // The agent's serving certificate carries only the node's agent name.
    let serving = CertInfo::parse(&issued.serving_certificate.unwrap()).unwrap();
    assert_eq!(serving.sans, vec![trust::join::agent_server_name("n1")]);
}

#[tokio::test]
async fn certificates_renew_before_they_expire_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Tier::start(dir.path(), Members::Clusters, Duration::from_secs(3)).await;
    let (url, token) = (tier.url(), tier.token());
    let member = TierPaths::new(dir.path().join("c1"));
    let first = trust::join::credentials(&member, tier.joining(&url, &token, "c1"))
        .await
        .unwrap();
    let first_expiry = CertInfo::parse(&first.client.cert_pem).unwrap().not_after;
    let (tls, identity) = first.tls().unwrap();
    let client = client::Client::with_tls(&url, tls).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let renewing = tokio::spawn(trust::join::keep_renewed(
        member.clone(),
        client.clone(),
        identity.clone(),
        None,
        shutdown.clone(),
    ));

    // Renewed at two thirds of the 3 s lifetime (the validity starts a minute early,
    // so "two thirds" comes at once): the stored certificate and the one the client
    // presents change, and the old one's end passes while the client keeps working.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let renewed = loop {
        let stored = trust::Upstream::load(&member).unwrap().unwrap();
        let expiry = CertInfo::parse(&stored.client.cert_pem).unwrap().not_after;
        if expiry > first_expiry {
            break stored;
        }
        assert!(tokio::time::Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        CertInfo::parse(&renewed.client.cert_pem)
            .unwrap()
            .common_name,
        "oakestra:cluster:c1"
    );
    let presented = pki::CertInfo::parse_der(&identity.leaf_der()).unwrap();
    assert!(presented.not_after > first_expiry);
    let wait = (first_expiry - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    let fresh = client::Client::with_tls(&url, renewed.tls().unwrap().0).unwrap();
    let clusters: client::Api<crds::Cluster> = fresh.api(None);
    clusters
        .create(&crds::Cluster::new("c1", Default::default()))
        .await
        .unwrap();
    shutdown.cancel();
    renewing.await.unwrap();
}
