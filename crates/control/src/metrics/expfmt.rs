//! A parser for the Prometheus text format (0.0.4), enough for what proxies export:
//! `# HELP`/`# TYPE` comments (skipped), `name{label="value",...} value [timestamp]`
//! samples with escaped label values, and the special values `+Inf`, `-Inf` and `NaN`.
//!
//! Written here rather than taken from a crate: the subset is small, the maintained
//! parsers come with registries and encoders we do not need, and this one reports the
//! line that failed.

use super::Labels;

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name, with its `_bucket`/`_sum`/`_count` suffix for histograms.
    pub name: String,
    /// The labels, `le` included for buckets.
    pub labels: Labels,
    /// The value.
    pub value: f64,
}

/// A line that is not a valid sample.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| "a sample without a value".to_string())?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: invalid value {value:?}"))?;
    // A timestamp may follow; proxies do not send one and the scrape time is used anyway.
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Labels) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s
            .find('=')
            .ok_or_else(|| "a label without `=`".to_string())?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid label name {key:?}"));
        }
        let after = s[eq + 1..].trim_start();
        let quoted = after
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {key}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {key}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if !value.is_empty() {
            labels.insert(key.to_string(), value);
        }
        s = quoted[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label {key}"));
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_proxy_exports() {
        let text = r#"# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",authority="echo:80",tls="no_identity"} 12
response_latency_ms_bucket{direction="outbound",dst_deployment="web",status_code="200",le="+Inf"} 3
response_latency_ms_sum{direction="outbound"} 1.5
process_start_time_seconds 1700000000
weird{a="x \"q\" \\ \n",b=""} NaN 1700000000000
"#;
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[0].name, "request_total");
        assert_eq!(samples[0].labels["authority"], "echo:80");
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].labels["le"], "+Inf");
        assert_eq!(samples[2].value, 1.5);
        assert!(samples[3].labels.is_empty());
        assert_eq!(samples[4].labels["a"], "x \"q\" \\ \n");
        assert!(
            !samples[4].labels.contains_key("b"),
            "empty labels are absent"
        );
        assert!(samples[4].value.is_nan());
    }

    #[test]
    fn names_the_broken_line() {
        let err = parse("ok 1\nbroken{a=\"x} 1\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("unterminated"), "{err}");
        assert!(parse("x{a=1} 2").unwrap_err().reason.contains("not quoted"));
        assert!(parse("x{a=\"1\"} two")
            .unwrap_err()
            .reason
            .contains("invalid value"));
        assert!(parse("x").is_err());
    }
}
