//! CNI specification versions.

use std::fmt;
use std::str::FromStr;

/// A `major.minor.patch` spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

/// Versions Berth speaks: 1.0.0 (and 1.1.0 for STATUS), and 0.3.x/0.4.0
/// configurations. 0.1.0/0.2.0 results have another shape and are refused.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl Version {
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Whether Berth can run a configuration of this version.
    pub fn is_supported(self) -> bool {
        SUPPORTED.iter().any(|s| s.parse() == Ok(self))
    }

    /// CHECK and a cached prevResult on DEL exist from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// STATUS exists from 1.1.0 on.
    pub fn has_status(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a version (want MAJOR.MINOR.PATCH)");
        let mut it = s.split('.').map(|p| if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) { None } else { p.parse::<u32>().ok() });
        let (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Version(a, b, c))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!("1.0.0".parse::<Version>(), Ok(Version(1, 0, 0)));
        assert!("0.3.1".parse::<Version>().unwrap() < Version::V0_4_0);
        assert!("1.0".parse::<Version>().is_err());
        assert!("1.0.0.0".parse::<Version>().is_err());
        assert!("1.x.0".parse::<Version>().is_err());
        assert!("".parse::<Version>().is_err());
        assert!(Version(1, 0, 0).is_supported());
        assert!(Version(0, 3, 1).is_supported());
        assert!(!Version(0, 2, 0).is_supported());
        assert!(!Version(2, 0, 0).is_supported());
        assert!(Version(0, 4, 0).has_check() && !Version(0, 3, 1).has_check());
        assert!(Version(1, 1, 0).has_status() && !Version(1, 0, 0).has_status());
        assert_eq!(Version(0, 3, 1).to_string(), "0.3.1");
    }
}
