//! Reading the server's Prometheus `/metrics` text.

use std::time::Duration;

use anyhow::Context;

/// Prefix of every metric the API server exports.
pub const PREFIX: &str = "oakestra_apiserver_";

/// The `/metrics` text of the server at `url`.
pub async fn scrape(url: &str) -> anyhow::Result<String> {
    let url = format!("{url}/metrics");
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?;
    Ok(response.text().await?)
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
