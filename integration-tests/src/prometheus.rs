//! A strict reader of the Prometheus text exposition format, for checking `/metrics`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a scrape; an error names the first line that is not valid exposition text.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line}", number + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"TYPE") {
                let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                if words.len() != 3 || !valid_name(words[1]) || !known.contains(&words[2]) {
                    return Err(bad("bad TYPE line"));
                }
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(bad("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (parsed, remainder) = parse_labels(after).map_err(|why| bad(&why))?;
            labels = parsed;
            rest = remainder;
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| bad("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse::<f64>().map_err(|_| bad("bad value"))?,
        };
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().map_err(|_| bad("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(bad("trailing text"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Labels after the `{`, up to and including the `}`; returns them and the rest of the line.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text.find('=').ok_or("a label without a value")?;
        let name = text[..eq].trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name '{name}'"));
        }
        let mut chars = text[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("a label value not in quotes".into());
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => value.push('\n'),
                (true, other) => value.push(other),
                (false, '\\') => {
                    escaped = true;
                    continue;
                }
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, other) => value.push(other),
            }
            escaped = false;
        }
        let end = end.ok_or("an unterminated label value")?;
        labels.insert(name.to_string(), value);
        text = text[end..].trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_any_label_values() {
        let text = "# HELP x_total Things\n# TYPE x_total counter\nx_total{route=\"/b/{bucket}\",q=\"a\\\"b\"} 3\ny 1.5e3 1700000000\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["route"], "/b/{bucket}");
        assert_eq!(samples[0].labels["q"], "a\"b");
        assert_eq!(samples[1].value, 1500.0);
    }

    #[test]
    fn refuses_what_is_not_exposition_text() {
        for bad in [
            "x{a=\"1\" 2",
            "9x 1",
            "x one",
            "x{a=1} 2",
            "# TYPE x sometimes",
            "x 1 2 3",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
