//! Identities: who a request comes from, and how each is written in a certificate's
//! subject (the common name and the organizations, as Kubernetes reads them).

use std::fmt;

/// Who a request comes from, once authenticated.
///
/// An API server sees only some of them: at the root, [`Admin`](Self::Admin) and
/// [`Cluster`](Self::Cluster); at a cluster, [`Admin`](Self::Admin), [`Node`](Self::Node),
/// [`Root`](Self::Root) (the root's proxy) and the cluster itself. [`System`](Self::System)
/// is the identity of the controllers in the server's own process: no certificate or
/// token maps to it, so no network request can present it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No credential was presented.
    Anonymous,
    /// The controllers running in the API server's own process.
    System,
    /// An administrator: may do everything (group `oakestra:masters`).
    Admin {
        /// The user name, e.g. `oakestra:admin`.
        name: String,
    },
    /// The orchestrator of cluster `name` (group `oakestra:clusters`).
    Cluster {
        /// The cluster's name.
        name: String,
    },
    /// The agent of worker node `name` (group `oakestra:nodes`).
    Node {
        /// The node's name.
        name: String,
    },
    /// The root orchestrator, reaching a cluster's API as a proxy (group `oakestra:roots`).
    Root,
}

/// The group of administrators.
pub const MASTERS: &str = "oakestra:masters";
/// The group of cluster orchestrators.
pub const CLUSTERS: &str = "oakestra:clusters";
/// The group of worker nodes.
pub const NODES: &str = "oakestra:nodes";
/// The group of the root orchestrator's proxy identity.
pub const ROOTS: &str = "oakestra:roots";

const CLUSTER_PREFIX: &str = "oakestra:cluster:";
const NODE_PREFIX: &str = "oakestra:node:";
const ROOT_USER: &str = "oakestra:root";
/// The user name of the administrator a tier creates for itself.
pub const ADMIN_USER: &str = "oakestra:admin";

impl Identity {
    /// The administrator a tier creates at its first start.
    pub fn admin() -> Identity {
        Identity::Admin {
            name: ADMIN_USER.into(),
        }
    }

    /// The user name, as Kubernetes' messages name it (`User "…"`):
    /// `system:anonymous`, `oakestra:cluster:C`, `oakestra:node:N`, ….
    pub fn user(&self) -> String {
        match self {
            Identity::Anonymous => "system:anonymous".into(),
            Identity::System => "system:oakestra-controllers".into(),
            Identity::Admin { name } => name.clone(),
            Identity::Cluster { name } => format!("{CLUSTER_PREFIX}{name}"),
            Identity::Node { name } => format!("{NODE_PREFIX}{name}"),
            Identity::Root => ROOT_USER.into(),
        }
    }

    /// The certificate subject that carries this identity: the common name and the
    /// organizations. `None` for the identities no certificate may carry
    /// ([`Anonymous`](Self::Anonymous), [`System`](Self::System)).
    pub fn subject(&self) -> Option<(String, Vec<String>)> {
        let group = match self {
            Identity::Anonymous | Identity::System => return None,
            Identity::Admin { .. } => MASTERS,
            Identity::Cluster { .. } => CLUSTERS,
            Identity::Node { .. } => NODES,
            Identity::Root => ROOTS,
        };
        Some((self.user(), vec![group.to_string()]))
    }

    /// The identity a certificate subject carries, or `None` when the subject is not one
    /// this project issues (the common name and the group must agree).
    pub fn from_subject(common_name: &str, organizations: &[&str]) -> Option<Identity> {
        let in_group = |g: &str| organizations.contains(&g);
        if let Some(name) = common_name.strip_prefix(CLUSTER_PREFIX) {
            return (in_group(CLUSTERS) && !name.is_empty()).then(|| Identity::Cluster {
                name: name.into(),
            });
        }
        if let Some(name) = common_name.strip_prefix(NODE_PREFIX) {
            return (in_group(NODES) && !name.is_empty()).then(|| Identity::Node {
                name: name.into(),
            });
        }
        if common_name == ROOT_USER {
            return in_group(ROOTS).then_some(Identity::Root);
        }
        (in_group(MASTERS) && !common_name.is_empty()).then(|| Identity::Admin {
            name: common_name.into(),
        })
    }

    /// Whether this identity may do everything.
    pub fn is_privileged(&self) -> bool {
        matches!(self, Identity::System | Identity::Admin { .. })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.user())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_foreign_ones_are_refused() {
        let identities = [
            Identity::admin(),
            Identity::Cluster { name: "c1".into() },
            Identity::Node { name: "n1".into() },
            Identity::Root,
        ];
        for identity in identities {
            let (cn, orgs) = identity.subject().expect("a certificate identity");
            let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
            assert_eq!(Identity::from_subject(&cn, &orgs), Some(identity));
        }
        assert_eq!(Identity::Anonymous.subject(), None);
        assert_eq!(Identity::System.subject(), None);
        // (common name, organizations): none of these is an identity we issue.
        let foreign: [(&str, &[&str]); 6] = [
            ("oakestra:node:n1", &[CLUSTERS]),
            ("oakestra:cluster:c1", &[NODES]),
            ("oakestra:cluster:", &[CLUSTERS]),
            ("oakestra:root", &[MASTERS, NODES]),
            ("someone", &[]),
            ("", &[MASTERS]),
        ];
        for (cn, orgs) in foreign {
            assert_eq!(Identity::from_subject(cn, orgs), None, "{cn} {orgs:?}");
        }
    }
}
