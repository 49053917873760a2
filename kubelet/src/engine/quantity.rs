//! Kubernetes resource quantities (`500m`, `128Mi`, `1.5G`, `2e3`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value of a quantity in base units, as a float.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// CPU in millicores, rounded up like Kubernetes' MilliValue.
pub fn millis(q: &Quantity) -> Option<i64> {
    parse(&q.0).map(|v| (v * 1000.0).ceil() as i64)
}

/// A quantity in whole base units, rounded up like Kubernetes' Value.
pub fn value(q: &Quantity) -> Option<i64> {
    parse(&q.0).map(|v| v.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("128Mi"), Some(134217728.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("12x"), None);
        assert_eq!(millis(&Quantity("250m".into())), Some(250));
        assert_eq!(millis(&Quantity("2".into())), Some(2000));
        assert_eq!(value(&Quantity("1Ki".into())), Some(1024));
    }
}
