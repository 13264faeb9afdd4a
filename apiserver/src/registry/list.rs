//! Lists: selectors, paging and continue tokens.
//!
//! A page of a list is read from storage at one revision; its continue token carries
//! that revision and the last key, so the next page continues at the same revision
//! (a snapshot across pages). With a selector, storage is read in larger pages and
//! filtered until enough objects match.

use base64::Engine;
use serde_json::{json, Value};

use super::{decode, Registry};
use crate::error::ApiError;
use crate::object::{self, FieldSelector, LabelSelector};
use crate::storage::{ListRequest, StorageError};
use crds::KindInfo;

/// Options of a list (and of the initial state of a watch).
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    /// Only objects whose labels match (`labelSelector`).
    pub labels: LabelSelector,
    /// Only objects whose fields match (`fieldSelector`).
    pub fields: FieldSelector,
    /// At most this many objects, then a continue token (`limit`; 0 is no limit).
    pub limit: Option<usize>,
    /// Continue the list a previous page's token names (`continue`).
    pub continue_token: Option<String>,
    /// List as of exactly this revision.
    pub revision: Option<i64>,
}

/// Where the next page of a list starts: after key `start`, at revision `rv`. Sent to
/// clients as URL-safe base64 of its JSON, which they hand back unchanged.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

impl ContinueToken {
    /// The token as clients see it.
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("token serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Read a token a client sent back (400 if it is not one of ours).
    fn decode(token: &str) -> Result<Self, ApiError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("continue: {token:?} is not a valid continue token"))
            })
    }
}

/// Keys read from storage per page: the requested limit, or at least 256 when a
/// selector filters the page (so a sparse selection does not cost a read per object).
fn storage_page(limit: Option<usize>, filtered: bool) -> Option<usize> {
    if filtered {
        limit.map(|l| l.max(256))
    } else {
        limit
    }
}

impl Registry {
    /// A `<Kind>List` of the matching objects.
    pub async fn list(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let prefix = object::key(kind, ns, "");
        let (mut start_after, mut revision) = (None, opts.revision);
        if let Some(token) = &opts.continue_token {
            let t = ContinueToken::decode(token)?;
            start_after = Some(t.start);
            revision = Some(t.rv);
        }
        let limit = opts.limit.filter(|l| *l > 0);
        let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut items = Vec::new();
        let mut more;
        let mut last_key;
        loop {
            let page = self
                .store
                .list(ListRequest {
                    prefix: prefix.clone(),
                    start_after: start_after.clone(),
                    limit: storage_page(limit, filtered),
                    revision,
                })
                .await
                .map_err(|e| match e {
                    StorageError::TooOld { requested, .. } if opts.continue_token.is_some() => ApiError::Gone(format!(
                        "the continue token's resourceVersion {requested} is no longer available; list again from the start"
                    )),
                    e => ApiError::from_storage(e, kind.plural, ""),
                })?;
            revision = Some(page.revision);
            more = page.more;
            last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                let o = decode(kv)?;
                if opts.labels.matches(&o) && opts.fields.matches(&o) {
                    items.push((kv.key.clone(), o));
                }
            }
            if !more || limit.is_some_and(|l| items.len() > l) || !filtered {
                break;
            }
            start_after = last_key.clone();
        }
        let revision = revision.unwrap_or_default();
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(l) = limit {
            if items.len() > l {
                items.truncate(l);
                more = true;
                last_key = items.last().map(|(k, _)| k.clone());
            }
            if more {
                if let Some(start) = last_key {
                    let token = ContinueToken {
                        rv: revision,
                        start,
                    };
                    metadata["continue"] = token.encode().into();
                }
            }
        }
        Ok(json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": metadata,
            "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        for (rv, start) in [
            (1, "/oakestra.io/services/default/web"),
            (i64::MAX, ""),
            (42, "/core/namespaces/a b/ü"),
        ] {
            let token = ContinueToken {
                rv,
                start: start.into(),
            };
            let encoded = token.encode();
            assert!(
                encoded
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "URL-safe without padding: {encoded}"
            );
            assert_eq!(ContinueToken::decode(&encoded).unwrap(), token);
        }
    }

    #[test]
    fn foreign_continue_tokens_are_a_bad_request() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for token in [
            "".to_string(),
            "not base64!".to_string(),
            b64("not json"),
            b64(r#"{"rv": 1}"#),
            b64(r#"{"rv": "1", "start": "/a"}"#),
            // Standard base64 with padding is not what we hand out.
            base64::engine::general_purpose::STANDARD.encode(r#"{"rv":1,"start":"/a/"}"#),
        ] {
            match ContinueToken::decode(&token) {
                Err(ApiError::BadRequest(m)) => {
                    assert!(m.contains("is not a valid continue token"), "{m}")
                }
                other => panic!("{token:?}: expected a bad request, got {other:?}"),
            }
        }
    }

    #[test]
    fn selective_lists_read_larger_pages() {
        for (limit, filtered, want) in [
            (None, false, None),
            (None, true, None),
            (Some(3), false, Some(3)),
            (Some(3), true, Some(256)),
            (Some(1000), true, Some(1000)),
        ] {
            assert_eq!(storage_page(limit, filtered), want, "{limit:?} {filtered}");
        }
    }
}
