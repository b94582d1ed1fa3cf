//! Reading a process's `/metrics` (OpenMetrics text) in tests.

/// The sum of the samples of `name` whose labels include every one of
/// `labels` (`key="value"` pairs); 0 when there is none.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn sums_matching_samples_only() {
        let text = "# TYPE memtrace_x counter\nmemtrace_x_total{a=\"1\",b=\"2\"} 3\nmemtrace_x_total{a=\"1\",b=\"3\"} 4\nmemtrace_x_totally 9\nmemtrace_y 5\n";
        assert_eq!(sample(text, "memtrace_x_total", &[r#"a="1""#]), 7.0);
        assert_eq!(sample(text, "memtrace_x_total", &[r#"b="3""#]), 4.0);
        assert_eq!(sample(text, "memtrace_y", &[]), 5.0);
        assert_eq!(sample(text, "memtrace_z", &[]), 0.0);
    }
}
