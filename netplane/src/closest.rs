//! Which endpoints a node's `closestIP` goes to (no IO).
//!
//! [`closest`] takes the first tier that is not empty: instances on the choosing node;
//! else in its cluster; else in the cluster(s) nearest by great-circle distance
//! ([`great_circle_km`]) to the node's cluster; else (nothing located, or the node's
//! own cluster has no location) every candidate.

use std::net::SocketAddrV4;

/// Mean Earth radius, in kilometres, for [`great_circle_km`].
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Distances closer than this (a millimetre) count as equal, so clusters at the same
/// distance tie despite rounding.
const TIE_KM: f64 = 1e-6;

/// Where the choosing node is.
#[derive(Debug, Clone, PartialEq)]
pub struct Locality {
    /// The node's name.
    pub node: String,
    /// Its cluster's name.
    pub cluster: String,
    /// Its cluster's location, `(latitude, longitude)` in degrees, if known.
    pub location: Option<(f64, f64)>,
}

/// An endpoint the `closestIP` may go to, and where it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The instance's address and port.
    pub addr: SocketAddrV4,
    /// The node it runs on.
    pub node: String,
    /// That node's cluster.
    pub cluster: String,
    /// The cluster's location, `(latitude, longitude)` in degrees, if known.
    pub location: Option<(f64, f64)>,
}

/// The candidates `me`'s `closestIP` goes to, in their given order: the first
/// non-empty tier of same node, same cluster, nearest located cluster(s) (all
/// clusters at the smallest distance), and anywhere (all candidates). Empty only when
/// `candidates` is.
pub fn closest<'a>(me: &Locality, candidates: &'a [Candidate]) -> Vec<&'a Candidate> {
    let tier = |keep: &dyn Fn(&Candidate) -> bool| -> Vec<&'a Candidate> {
        candidates.iter().filter(|c| keep(c)).collect()
    };
    let same_node = tier(&|c| c.node == me.node);
    if !same_node.is_empty() {
        return same_node;
    }
    let same_cluster = tier(&|c| c.cluster == me.cluster);
    if !same_cluster.is_empty() {
        return same_cluster;
    }
    if let Some(here) = me.location {
        let distance = |c: &Candidate| c.location.map(|there| great_circle_km(here, there));
        let nearest = candidates
            .iter()
            .filter_map(distance)
            .min_by(f64::total_cmp);
        if let Some(nearest) = nearest {
            return tier(&|c| distance(c).is_some_and(|d| d - nearest <= TIE_KM));
        }
    }
    candidates.iter().collect()
}

/// The great-circle distance in kilometres between two `(latitude, longitude)`
/// points in degrees (haversine formula, Earth radius 6371 km).
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MUNICH: (f64, f64) = (48.1351, 11.5820);
    const BERLIN: (f64, f64) = (52.5200, 13.4050);
    const HAMBURG: (f64, f64) = (53.5511, 9.9937);
    const ROME: (f64, f64) = (41.9028, 12.4964);

    fn cand(port: u16, node: &str, cluster: &str, location: Option<(f64, f64)>) -> Candidate {
        Candidate {
            addr: SocketAddrV4::new([10, 128, 0, 2].into(), port),
            node: node.into(),
            cluster: cluster.into(),
            location,
        }
    }

    fn me(location: Option<(f64, f64)>) -> Locality {
        Locality {
            node: "n1".into(),
            cluster: "munich".into(),
            location,
        }
    }

    #[test]
    fn closest_table() {
        // Candidates are told apart by port; `want` lists the chosen ports in order.
        let cases: Vec<(&str, Locality, Vec<Candidate>, Vec<u16>)> = vec![
            ("empty gives empty", me(Some(MUNICH)), vec![], vec![]),
            (
                "same node wins over same cluster",
                me(Some(MUNICH)),
                vec![
                    cand(1, "n2", "munich", Some(MUNICH)),
                    cand(2, "n1", "munich", Some(MUNICH)),
                    cand(3, "n1", "munich", Some(MUNICH)),
                ],
                vec![2, 3],
            ),
            (
                "same cluster over a nearer other cluster",
                Locality {
                    location: Some(BERLIN),
                    ..me(None)
                },
                vec![
                    cand(1, "b1", "berlin", Some(BERLIN)),
                    cand(2, "n2", "munich", Some(MUNICH)),
                ],
                vec![2],
            ),
            (
                "nearest of two remote clusters",
                me(Some(MUNICH)),
                vec![
                    cand(1, "h1", "hamburg", Some(HAMBURG)),
                    cand(2, "b1", "berlin", Some(BERLIN)),
                    cand(3, "b2", "berlin", Some(BERLIN)),
                ],
                vec![2, 3],
            ),
            (
                "two clusters at equal distance both count",
                me(Some((0.0, 0.0))),
                vec![
                    cand(1, "e1", "east", Some((0.0, 10.0))),
                    cand(2, "far", "far", Some((0.0, 50.0))),
                    cand(3, "w1", "west", Some((0.0, -10.0))),
                ],
                vec![1, 3],
            ),
            (
                "unlocated clusters come after every located one",
                me(Some(MUNICH)),
                vec![
                    cand(1, "x1", "nowhere", None),
                    cand(2, "r1", "rome", Some(ROME)),
                ],
                vec![2],
            ),
            (
                "no location of mine: anywhere",
                me(None),
                vec![
                    cand(1, "r1", "rome", Some(ROME)),
                    cand(2, "x1", "nowhere", None),
                ],
                vec![1, 2],
            ),
            (
                "no location anywhere: all",
                me(Some(MUNICH)),
                vec![cand(1, "x1", "x", None), cand(2, "y1", "y", None)],
                vec![1, 2],
            ),
        ];
        for (case, me, candidates, want) in cases {
            let got: Vec<u16> = closest(&me, &candidates)
                .iter()
                .map(|c| c.addr.port())
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn great_circle_known_distances() {
        let cases = [
            ("Munich-Berlin", MUNICH, BERLIN, 504.0, 5.0),
            ("Berlin-Munich", BERLIN, MUNICH, 504.0, 5.0),
            ("same point", ROME, ROME, 0.0, 1e-9),
            // A quarter of the equator.
            ("equator quarter", (0.0, 0.0), (0.0, 90.0), 10_007.5, 1.0),
            // Antipodes: half the circumference.
            ("antipodes", (0.0, 0.0), (0.0, 180.0), 20_015.1, 1.0),
        ];
        for (case, a, b, want, tolerance) in cases {
            let got = great_circle_km(a, b);
            assert!(
                (got - want).abs() <= tolerance,
                "{case}: {got} km, want {want}"
            );
        }
    }
}
