//! The web dashboard, this crate's one concern: what the root serves at `/ui/`.
//!
//! - The page itself: plain HTML, CSS and JavaScript modules under `assets/`, built into
//!   the binary ([`ASSETS`]); no build step, nothing fetched from elsewhere. Every
//!   answer carries a strict Content-Security-Policy ([`CONTENT_SECURITY_POLICY`]) and
//!   `X-Content-Type-Options: nosniff`. The page holds no data, so it is served without
//!   a credential: it asks for one (a bearer token, or the user and password of
//!   Oakestra's login) and sends it with every request it makes to the API, which
//!   decides as for any other client.
//! - [`documents`]: the manifest reader of the page's apply form: YAML (several
//!   documents), JSON or an Oakestra SLA in, the objects and the API paths to apply them
//!   at out, with the line of each field so the page can show the API's validation
//!   errors where the field is written. It reads only what it is sent; the page then
//!   applies each object to the API itself (server-side apply), with its own token.
//!
//! [`routes`] is the router the root merges beside its API (`/ui`, `/ui/…`).

pub mod documents;

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use pki::Identity;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The Content-Security-Policy of every answer under `/ui/`: scripts, styles and images
/// from the page's own origin only, requests only to it, no inline code, no frames, no
/// plugins, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Where the dashboard is served.
pub const PREFIX: &str = "/ui/";

/// The field manager the page's applies use (`?fieldManager=…`).
pub const FIELD_MANAGER: &str = "oakestra-dashboard";

/// One file of the page.
#[derive(Debug)]
pub struct Asset {
    /// Its path under [`PREFIX`].
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page, built into the binary.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("store.js", JS),
    asset!("dom.js", JS),
    asset!("table.js", JS),
    asset!("format.js", JS),
    asset!("world.js", JS),
    asset!("views/login.js", JS),
    asset!("views/map.js", JS),
    asset!("views/cluster.js", JS),
    asset!("views/services.js", JS),
    asset!("views/service.js", JS),
    asset!("views/instances.js", JS),
    asset!("views/events.js", JS),
    asset!("views/apply.js", JS),
    asset!("views/logs.js", JS),
];

/// The asset at `path` (under [`PREFIX`]; empty: the page).
pub fn asset(path: &str) -> Option<(usize, &'static Asset)> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().enumerate().find(|(_, a)| a.path == path)
}

/// The entity tag of each asset (a hash of its bytes), in [`ASSETS`]' order.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// What the dashboard is told by the root.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How SLAs are read (the root's service range, where `rr_ip` must be).
    pub sla: sla::Options,
}

/// The dashboard's routes: `/ui` (a redirect to `/ui/`), the page's files under `/ui/`,
/// and `POST /ui/api/documents` (the manifest reader, for authenticated callers). The
/// caller's [`Identity`] is a request extension, as the API server's listener sets it.
pub fn routes(settings: Settings) -> Router {
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("", &headers) }))
        .route("/ui/api/documents", post(read_documents))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers)
            }),
        )
        .with_state(Arc::new(settings))
        .layer(axum::middleware::map_response(secure))
}

/// The headers every answer under `/ui/` carries.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn redirect() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, PREFIX)]).into_response()
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some((index, asset)) = asset(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{PREFIX}{path}: no such file of the dashboard"),
        )
            .into_response();
    };
    let etag = &etags()[index];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let headers = [
        (header::CONTENT_TYPE, asset.content_type.to_string()),
        // Built into the binary: the same bytes until the binary changes, which the
        // tag tells; the browser asks each time and mostly gets a 304.
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::ETAG, etag.clone()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.body).into_response()
}

/// `POST /ui/api/documents`: the text of a manifest or SLA in; its objects, each with
/// the API path it is applied at and the lines of its fields, out (200), or every
/// problem found reading it (400), as [`documents::read`] says. Anonymous callers get
/// the API's 401.
async fn read_documents(
    State(settings): State<Arc<Settings>>,
    identity: Option<Extension<Identity>>,
    body: Bytes,
) -> Response {
    match identity {
        Some(Extension(identity)) if identity != Identity::Anonymous => {}
        _ => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(crds::Status::failure(401, "Unauthorized", "Unauthorized")),
            )
                .into_response()
        }
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        let problem = documents::Problem::whole("the text is not UTF-8");
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"problems": [problem]})),
        )
            .into_response();
    };
    match documents::read(text, &settings.sla) {
        Ok(read) => Json(json!({"documents": read})).into_response(),
        Err(problems) => {
            (StatusCode::BAD_REQUEST, Json(json!({"problems": problems}))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn router() -> Router {
        routes(Settings {
            sla: sla::Options::default(),
        })
    }

    async fn call(request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = router().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_the_policy() {
        for asset in ASSETS {
            let (status, headers, body) = call(get(&format!("/ui/{}", asset.path))).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.path);
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                headers["content-security-policy"], CONTENT_SECURITY_POLICY,
                "{}",
                asset.path
            );
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(body, asset.body);
        }
        let (status, headers, body) = call(get("/ui/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(String::from_utf8(body).unwrap().contains("<title>"));
    }

    #[tokio::test]
    async fn the_bare_prefix_redirects_and_unknown_files_are_404_with_the_policy() {
        let (status, headers, _) = call(get("/ui")).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/ui/");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
        for path in ["/ui/nope.js", "/ui/../Cargo.toml", "/ui/views/"] {
            let (status, headers, _) = call(get(path)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
        }
    }

    #[tokio::test]
    async fn a_known_version_is_not_sent_again() {
        let (_, headers, _) = call(get("/ui/app.js")).await;
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        let request = Request::get("/ui/app.js")
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(headers[header::ETAG], etag.as_str());
    }

    #[test]
    fn the_page_has_no_inline_code_and_loads_only_its_own_files() {
        let page = std::str::from_utf8(asset("").unwrap().1.body).unwrap();
        assert!(!page.contains("style="), "inline style in index.html");
        assert!(!page.contains("<style"), "inline style in index.html");
        assert!(
            !page.contains("<script>") && !page.contains("onclick") && !page.contains("onload"),
            "inline script in index.html"
        );
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            for far in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(far) && !l.contains("www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{}: {far} in {hits:?}", asset.path);
            }
        }
        // Every module the page imports is served.
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for import in text.lines().filter_map(|l| l.split(" from '").nth(1)) {
                let target = import.trim_end_matches("';");
                let base = asset.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let resolved = resolve(base, target);
                assert!(
                    self::asset(&resolved).is_some(),
                    "{} imports {target} ({resolved}), which is not served",
                    asset.path
                );
            }
        }
    }

    /// `target` (`./x.js`, `../x.js`) relative to the directory `base`.
    fn resolve(base: &str, target: &str) -> String {
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        for segment in target.split('/') {
            match segment {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        parts.join("/")
    }

    #[tokio::test]
    async fn the_manifest_reader_answers_authenticated_callers_only() {
        let text = "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  replicas: 2\n  template: {runtime: process, executable: /bin/true}\n";
        let post = |identity: Option<Identity>| {
            let mut request = Request::post("/ui/api/documents")
                .body(Body::from(text))
                .unwrap();
            if let Some(identity) = identity {
                request.extensions_mut().insert(identity);
            }
            request
        };
        for anonymous in [None, Some(Identity::Anonymous)] {
            let (status, headers, body) = call(post(anonymous)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
            let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status["reason"], "Unauthorized");
        }
        let (status, _, body) = call(post(Some(Identity::admin()))).await;
        assert_eq!(status, StatusCode::OK);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let doc = &answer["documents"][0];
        assert_eq!(
            doc["path"],
            "/apis/oakestra.io/v1/namespaces/default/services/web"
        );
        assert_eq!(doc["fields"]["spec.replicas"], 5);
        let bad = Request::post("/ui/api/documents")
            .extension(Identity::admin())
            .body(Body::from("a: [unclosed\n"))
            .unwrap();
        let (status, _, body) = call(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["problems"][0]["document"], 1);
    }
}
