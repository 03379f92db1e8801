//! Human-friendly value types of the config file: durations ("2s"), byte sizes ("1MiB"), shares ("20%").

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written as a string with a unit: `"500ms"`, `"2s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like \"500ms\", \"2s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s.trim()).map(Dur).map_err(|_| {
                    E::custom(format!(
                        "invalid duration {s:?}: expected a number with a unit, like \"500ms\", \"2s\" or \"5m\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A byte size: an integer number of bytes, or a string with a unit (`"64KiB"`, `"10MB"`, `"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// Parses `"64KiB"`, `"10MB"`, `"1m"`, `"512"` into bytes (binary multiples for k/m/g).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes, like 65536 or \"64KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {s:?}: expected bytes with an optional unit, like \"64KiB\" or \"10MiB\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A share between 0 and 1, written `"20%"` or `0.2`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Share(pub f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Percent::Share).map(Share)
    }
}

/// The visitor of [`Share`] (0 to 1) and [`Ratio`] (0 and up): a number, or a percentage.
#[derive(Clone, Copy)]
enum Percent {
    Share,
    Ratio,
}

impl de::Visitor<'_> for Percent {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Percent::Share => "a share like \"20%\" or 0.2",
            Percent::Ratio => "a percentage like \"200%\" or a number like 2.0",
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        match self {
            Percent::Share if (0.0..=1.0).contains(&v) => Ok(v),
            Percent::Ratio if v.is_finite() && v >= 0.0 => Ok(v),
            Percent::Share => Err(E::custom(format!(
                "share {v} is out of range: expected 0.0 to 1.0, or \"0%\" to \"100%\""
            ))),
            Percent::Ratio => Err(E::custom(format!(
                "{v} is out of range: expected 0 or more"
            ))),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<f64, E> {
        let pct = s
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .ok_or_else(|| {
                E::custom(match self {
                    Percent::Share => {
                        format!("invalid share {s:?}: expected a percentage like \"20%\"")
                    }
                    Percent::Ratio => {
                        format!("invalid percentage {s:?}: expected one like \"200%\"")
                    }
                })
            })?;
        self.visit_f64(pct / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_units() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12 parsecs"), None);
    }

    #[derive(Deserialize)]
    struct T {
        d: Dur,
        s: Share,
    }

    #[test]
    fn durations_and_shares_parse_from_toml() {
        let t: T = toml::from_str("d = \"1500ms\"\ns = \"20%\"").unwrap();
        assert_eq!(t.d.0, Duration::from_millis(1500));
        assert!((t.s.0 - 0.2).abs() < 1e-9);
        assert!(toml::from_str::<T>("d = \"soon\"\ns = 0.1").is_err());
        assert!(toml::from_str::<T>("d = \"1s\"\ns = \"150%\"").is_err());
    }
}

/// A ratio that may exceed 1, written `"200%"` or `2.0`: at least 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(pub f64);

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Percent::Ratio).map(Ratio)
    }
}
