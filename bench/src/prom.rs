//! Reading the server's Prometheus `/metrics` text.

use std::time::Duration;

use anyhow::Context;

/// Prefix of every metric the API server exports.
pub const PREFIX: &str = "oakestra_apiserver_";

/// The `/metrics` text of the server of `client` (which must be allowed to read it:
/// an administrator's).
pub async fn scrape(client: &client::Client) -> anyhow::Result<String> {
    let url = format!("{}/metrics", client.base());
    tokio::time::timeout(Duration::from_secs(10), client.get_text("/metrics"))
        .await
        .with_context(|| format!("GET {url}: no answer in 10 s"))?
        .with_context(|| format!("GET {url}"))
}

/// Mean, in ms, of the server's histogram `metric` (in seconds, without [`PREFIX`])
/// over the series whose labels contain `label`, between two scrapes.
pub fn mean_ms(before: &str, after: &str, metric: &str, label: &str) -> f64 {
    let delta = |suffix: &str| {
        let name = format!("{PREFIX}{metric}_{suffix}");
        sample(after, &name, label) - sample(before, &name, label)
    };
    let (sum, count) = (delta("sum"), delta("count"));
    if count > 0.0 {
        sum / count * 1e3
    } else {
        0.0
    }
}

/// Sum of the samples named `name` (exactly, with its prefix) whose labels contain
/// `label`.
pub fn sample(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            if metric == name && labels.contains(label) {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .fold(0.0, |a, b| a + b)
}

/// The samples named `name` (exactly, with its prefix) in a scrape, by their label
/// text (what is between the braces; empty without labels).
fn series(text: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name).then(|| {
                (
                    labels.trim_end_matches('}').to_string(),
                    value.parse().unwrap_or(0.0),
                )
            })
        })
        .collect()
}

/// Per label text that `keep` accepts, how much the counter `name` (exactly, with its
/// prefix) grew between two scrapes; label sets that did not grow are left out.
pub fn counter_deltas(
    before: &str,
    after: &str,
    name: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, f64)> {
    let earlier = series(before, name);
    series(after, name)
        .into_iter()
        .filter(|(labels, _)| keep(labels))
        .map(|(labels, v)| {
            let grew = v - earlier.get(&labels).copied().unwrap_or(0.0);
            (labels, grew)
        })
        .filter(|(_, grew)| *grew > 0.0)
        .collect()
}

/// Per label set of the histogram `metric` (without [`PREFIX`]): how many observations
/// and their mean in ms between two scrapes, busiest first; label sets without any are
/// left out.
pub fn deltas(before: &str, after: &str, metric: &str) -> Vec<(String, f64, f64)> {
    let name = |suffix: &str| format!("{PREFIX}{metric}_{suffix}");
    let (count0, count1) = (
        series(before, &name("count")),
        series(after, &name("count")),
    );
    let (sum0, sum1) = (series(before, &name("sum")), series(after, &name("sum")));
    let mut out: Vec<(String, f64, f64)> = count1
        .iter()
        .filter_map(|(labels, c1)| {
            let count = c1 - count0.get(labels).unwrap_or(&0.0);
            let sum = sum1.get(labels)? - sum0.get(labels).unwrap_or(&0.0);
            (count > 0.0).then(|| (labels.clone(), count, sum / count * 1e3))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_mean_between_scrapes() {
        let before = "# HELP x\n\
            oakestra_apiserver_request_duration_seconds_sum{verb=\"create\",resource=\"clusters\"} 1.0\n\
            oakestra_apiserver_request_duration_seconds_count{verb=\"create\",resource=\"clusters\"} 10\n";
        let after = "oakestra_apiserver_request_duration_seconds_sum{verb=\"create\",resource=\"clusters\"} 3.0\n\
            oakestra_apiserver_request_duration_seconds_count{verb=\"create\",resource=\"clusters\"} 20\n\
            oakestra_apiserver_request_duration_seconds_sum{verb=\"list\",resource=\"clusters\"} 9.0\n\
            oakestra_apiserver_watchers 7\n";
        let m = mean_ms(before, after, "request_duration_seconds", "verb=\"create\"");
        assert!((m - 200.0).abs() < 1e-9);
        assert_eq!(sample(after, "oakestra_apiserver_watchers", ""), 7.0);
        assert!(sample(before, "oakestra_apiserver_watchers", "").is_sign_positive());
    }
}
