//! Kubernetes resource quantities (`500m`, `1.5Gi`, `1e3`), parsed exactly.

use std::cmp::Ordering;
use std::fmt;

/// The regular expression Kubernetes names in its parse error.
pub const QUANTITY_REGEX: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

const NANO: i128 = 1_000_000_000;

/// A parsed quantity, held exactly in nano-units (values below 1n round up, as in Kubernetes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParsedQuantity {
    nanos: i128,
}

/// A string that is not a Kubernetes quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '{QUANTITY_REGEX}'")]
pub struct QuantityError;

impl ParsedQuantity {
    pub const ZERO: ParsedQuantity = ParsedQuantity { nanos: 0 };

    /// Parses Kubernetes' quantity syntax: `<sign><digits>[.<digits>]<suffix>` with a binary
    /// (`Ki`..`Ei`), decimal (`n u m "" k M G T P E`) or exponent (`e3`, `E-2`) suffix.
    pub fn parse(s: &str) -> Result<ParsedQuantity, QuantityError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(QuantityError);
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError);
        }
        // (base, exponent): value = number * base^exponent
        let (base, exp): (i128, i32) = match suffix {
            "" => (10, 0),
            "n" => (10, -9),
            "u" => (10, -6),
            "m" => (10, -3),
            "k" => (10, 3),
            "M" => (10, 6),
            "G" => (10, 9),
            "T" => (10, 12),
            "P" => (10, 15),
            "E" => (10, 18),
            "Ki" => (2, 10),
            "Mi" => (2, 20),
            "Gi" => (2, 30),
            "Ti" => (2, 40),
            "Pi" => (2, 50),
            "Ei" => (2, 60),
            _ => {
                let e = suffix.strip_prefix(['e', 'E']).ok_or(QuantityError)?;
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError);
                }
                let e: i32 = e.parse().map_err(|_| QuantityError)?;
                if !(-40..=40).contains(&e) {
                    return Err(QuantityError);
                }
                (10, e)
            }
        };
        // Digits as an integer mantissa with a decimal scale.
        let digits: String = format!("{int_part}{frac_part}").trim_start_matches('0').to_string();
        if digits.len() > 30 {
            return Err(QuantityError);
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| QuantityError)? };
        let mut scale10 = -(frac_part.len() as i32); // value = mantissa * 10^scale10 * base^exp
        let mut value = mantissa; // in units of 10^scale10, times base^exp
        if base == 2 {
            value = value.checked_mul(1i128 << exp).ok_or(QuantityError)?;
        } else {
            scale10 += exp;
        }
        // to nano-units: multiply by 10^(scale10 + 9), rounding up what falls below 1n.
        let shift = scale10 + 9;
        let nanos = if shift >= 0 {
            value.checked_mul(10i128.checked_pow(shift as u32).ok_or(QuantityError)?).ok_or(QuantityError)?
        } else {
            let div = 10i128.checked_pow((-shift) as u32).ok_or(QuantityError)?;
            (value + div - 1) / div
        };
        // Kubernetes caps at 2^63-1 (in the value's own units); keep far inside i128.
        if nanos > (i64::MAX as i128) * NANO {
            return Err(QuantityError);
        }
        Ok(ParsedQuantity { nanos: if negative { -nanos } else { nanos } })
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value rounded up to a whole number (Kubernetes' `Value()`), e.g. bytes.
    pub fn value(&self) -> i64 {
        ceil_div(self.nanos, NANO)
    }

    /// The value in thousandths rounded up (Kubernetes' `MilliValue()`), e.g. millicores.
    pub fn milli_value(&self) -> i64 {
        ceil_div(self.nanos, NANO / 1000)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

fn ceil_div(a: i128, b: i128) -> i64 {
    let q = a.div_euclid(b) + if a.rem_euclid(b) != 0 { 1 } else { 0 };
    q.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl fmt::Display for ParsedQuantity {
    /// A plain decimal rendering (not Kubernetes' canonical suffix form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        let (int, frac) = (abs / NANO, abs % NANO);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:09}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// Compares two quantity strings; `None` when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(ParsedQuantity::parse(a).ok()?.cmp(&ParsedQuantity::parse(b).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> i128 {
        ParsedQuantity::parse(s).unwrap().nanos()
    }

    #[test]
    fn parses_all_suffix_forms() {
        assert_eq!(n("1"), NANO);
        assert_eq!(n("500m"), NANO / 2);
        assert_eq!(n("0.5"), NANO / 2);
        assert_eq!(n(".5"), NANO / 2);
        assert_eq!(n("5."), 5 * NANO);
        assert_eq!(n("1k"), 1000 * NANO);
        assert_eq!(n("1Ki"), 1024 * NANO);
        assert_eq!(n("1.5Gi"), 1536 * 1024 * 1024 * NANO);
        assert_eq!(n("1e3"), 1000 * NANO);
        assert_eq!(n("1E-3"), NANO / 1000);
        assert_eq!(n("+2M"), 2_000_000 * NANO);
        assert_eq!(n("-1"), -NANO);
        assert_eq!(n("100n"), 100);
        assert_eq!(n("1u"), 1000);
        assert_eq!(n("0"), 0);
        assert_eq!(n("7Ei"), (7i128 << 60) * NANO);
        assert!(ParsedQuantity::parse("8Ei").is_err(), "above 2^63-1");
    }

    #[test]
    fn rounds_up_below_nano() {
        assert_eq!(n("0.1n"), 1);
        assert_eq!(ParsedQuantity::parse("1.5").unwrap().value(), 2);
        assert_eq!(ParsedQuantity::parse("0.0001").unwrap().milli_value(), 1);
        assert_eq!(ParsedQuantity::parse("250m").unwrap().milli_value(), 250);
        assert_eq!(ParsedQuantity::parse("128Mi").unwrap().value(), 134_217_728);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["", "abc", "1XB", "1.2.3", "Mi", "1 Mi", "1mi", "1e", "1ee3", "1Kii", "--1", "1e1000", "1e3m"] {
            assert_eq!(ParsedQuantity::parse(bad), Err(QuantityError), "{bad:?}");
        }
        assert_eq!(
            QuantityError.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn compares_and_displays() {
        assert_eq!(compare("1", "1000m"), Some(Ordering::Equal));
        assert_eq!(compare("1Gi", "1G"), Some(Ordering::Greater));
        assert_eq!(compare("x", "1"), None);
        assert_eq!(ParsedQuantity::parse("1500m").unwrap().to_string(), "1.5");
        assert_eq!(ParsedQuantity::parse("-2").unwrap().to_string(), "-2");
    }
}
