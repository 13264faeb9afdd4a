//! The storage key layout: `/<group>/<plural>[/<namespace>]/<name>`, with `core` as the
//! group of core kinds.

use crds::KindInfo;

/// Storage key of an object (`name` empty: the prefix of the collection; `namespace`
/// `None` for a namespaced kind: the prefix of every namespace's objects).
pub fn key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    let group = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    match namespace {
        Some(ns) if kind.namespaced => format!("/{group}/{}/{ns}/{name}", kind.plural),
        _ => format!("/{group}/{}/{name}", kind.plural),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let kind = |n| crds::kind_by_name(n).unwrap();
        for (kind, ns, name, want) in [
            (
                kind("svc"),
                Some("default"),
                "web",
                "/oakestra.io/services/default/web",
            ),
            (kind("svc"), None, "", "/oakestra.io/services/"),
            (
                kind("cl"),
                Some("default"),
                "c1",
                "/oakestra.io/clusters/c1",
            ),
            (kind("ns"), None, "default", "/core/namespaces/default"),
        ] {
            assert_eq!(key(kind, ns, name), want, "{} {ns:?} {name}", kind.plural);
        }
    }
}
