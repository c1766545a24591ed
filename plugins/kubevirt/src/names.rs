//! Names and values as Kubernetes wants them: deterministic object names
//! derived from idempotency keys, DNS labels, label validity, quantities and
//! timestamps.

use sha2::{Digest, Sha256};

/// The annotation holding the idempotency key an object was created under.
pub const KEY_ANNOTATION: &str = "rebound.io/idempotency-key";

/// `base` made a DNS-1123 label of at most `max` characters: lower-case
/// letters, digits and `-`, starting and ending alphanumeric.
pub fn dns_label(base: &str, max: usize) -> String {
    let mut out: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(max);
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() { "x".into() } else { out }
}

/// Whether `name` is a DNS-1123 label already (what [`dns_label`] makes):
/// every name this plugin derives is one, and one is safe in an API path.
pub fn dns_label_ok(name: &str) -> bool {
    !name.is_empty() && dns_label(name, 63) == name
}

/// A name derived from an idempotency key: `<base>-<12 hex of its
/// SHA-256>`, at most 63 characters, so a repeated call finds what the
/// first one created.
pub fn derived(base: &str, key: &str) -> String {
    let hash = Sha256::digest(key.as_bytes());
    let suffix: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{suffix}", dns_label(base, 63 - 1 - suffix.len()))
}

/// Whether `value` is a valid label value (≤ 63 of `[A-Za-z0-9._-]`,
/// alphanumeric at both ends, or empty).
pub fn label_value_ok(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Whether `key` is a valid label key (`[prefix/]name`).
pub fn label_key_ok(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let prefix_ok = prefix.is_empty()
        || (prefix.len() <= 253
            && prefix
                .split('.')
                .all(|part| !part.is_empty() && dns_label(part, 63) == part));
    prefix_ok && !name.is_empty() && label_value_ok(name)
}

pub use rebound_plugin_sdk::http::encode;

/// Bytes of a Kubernetes quantity (`"10Gi"`, `"512M"`, `"1048576"`).
pub fn quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    u64::try_from((digits * multiplier).div_ceil(scale)).ok()
}

/// CPUs of a quantity such as `"2"` or `"500m"`, rounded up.
pub fn cpus(q: &str) -> Option<u32> {
    match q.strip_suffix('m') {
        Some(milli) => u32::try_from(milli.parse::<u64>().ok()?.div_ceil(1000)).ok(),
        None => u32::try_from(quantity(q)?).ok(),
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time
/// (`2026-11-25T04:09:03Z`, fractional seconds allowed).
pub fn rfc3339_ms(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let total = ((days * 24 + hh) * 60 + mm) * 60 + ss;
    u64::try_from(total * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_stable_dns_labels() {
        let a = derived("Web_1 Disk0", "run-1/step-3/import/0");
        assert_eq!(a, derived("Web_1 Disk0", "run-1/step-3/import/0"));
        assert_ne!(a, derived("Web_1 Disk0", "run-1/step-3/import/1"));
        assert!(a.starts_with("web-1-disk0-"), "{a}");
        let long = derived(&"x".repeat(200), "k");
        assert_eq!(long.len(), 63);
        assert_eq!(dns_label("--", 10), "x");
        assert!(dns_label_ok(&a) && dns_label_ok(&long));
        for not_a_label in ["", "-a", "Web-1", "a/b", "../x", "a.b", "x-"] {
            assert!(!dns_label_ok(not_a_label), "{not_a_label}");
        }
    }

    #[test]
    fn labels_are_checked() {
        assert!(label_key_ok("rebound/workload"));
        assert!(label_key_ok("app"));
        assert!(label_key_ok("kubevirt.io/domain"));
        assert!(!label_key_ok("bad key"));
        assert!(label_value_ok("0b1c-uuid"));
        assert!(!label_value_ok("a/b"));
        assert!(!label_value_ok(&"a".repeat(64)));
    }

    #[test]
    fn quantities_and_times_parse() {
        assert_eq!(quantity("1Gi"), Some(1 << 30));
        assert_eq!(quantity("67108864"), Some(64 << 20));
        assert_eq!(quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity("1G"), Some(1_000_000_000));
        assert_eq!(quantity("Gi"), None);
        assert_eq!(cpus("500m"), Some(1));
        assert_eq!(cpus("4"), Some(4));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2026-11-25T04:09:03Z"), Some(1_795_579_743_000));
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00.25Z"), Some(951_782_400_250));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}
