//! [`Span`]: a duration written the way people write them in plans
//! (`"90s"`, `"15m"`, `"1h 30m"`), serialized back the same way.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl Span {
    pub fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Span)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "'{text}' is not a duration such as \"90s\", \"15m\" or \"1h 30m\" ({e})"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip_in_human_form() {
        let s: Span = serde_json::from_str("\"1h 30m\"").expect("parse");
        assert_eq!(s, Span::secs(5400));
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"1h 30m\"");
        assert_eq!(Span::secs(0).to_string(), "0s");
        let err = serde_json::from_str::<Span>("\"soon\"").expect_err("bad");
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }
}
