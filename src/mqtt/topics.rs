//! MQTT topic filters: which received topic a subscription covers.

/// Checks a filter: `+` and `#` only as whole levels, `#` last; `$share/GROUP/`
/// prefix allowed.
pub fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = shared_part(filter).split('/').collect();
    if filter.is_empty()
        || levels
            .iter()
            .any(|level| level.is_empty() && levels.len() == 1)
    {
        return Err("empty filter".into());
    }
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("# must be a whole last level".into());
        }
        if level.contains('+') && *level != "+" {
            return Err("+ must be a whole level".into());
        }
    }
    Ok(())
}

/// Whether `topic` is one that `filter` subscribes to.
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut wanted = shared_part(filter).split('/');
    let mut got = topic.split('/');
    loop {
        match (wanted.next(), got.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(level), Some(actual)) if level == actual => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The filter without a `$share/GROUP/` prefix (shared subscriptions deliver topics
/// as published).
fn shared_part(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, filter)| filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_topics_level_by_level() {
        assert!(matches("wmbusmeters/#", "wmbusmeters/Apt12Cold"));
        assert!(matches("wmbusmeters/#", "wmbusmeters"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("$share/gardien/wmbusmeters/+", "wmbusmeters/x"));
        assert!(check_filter("a/#").is_ok());
        assert!(check_filter("a/#/b").is_err());
        assert!(check_filter("a/b+").is_err());
        assert!(check_filter("").is_err());
    }
}
