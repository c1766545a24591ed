//! Cinder volumes, snapshots and backups: reading them (in this region or
//! another of the same cloud), finding what the plugin created under a key,
//! creating them once, and their timestamps.

use rebound_plugin_sdk::ProviderError;
use serde_json::{Value, json};

use crate::cloud::{Cloud, Service, Verb, encode, request_id};
use crate::nova::{KEY, text};

pub const GIB: u64 = 1 << 30;

/// A Cinder collection: `volumes`, `snapshots` or `backups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Volume,
    Snapshot,
    Backup,
}

impl Kind {
    fn collection(self) -> &'static str {
        match self {
            Self::Volume => "volumes",
            Self::Snapshot => "snapshots",
            Self::Backup => "backups",
        }
    }

    fn one(self) -> &'static str {
        match self {
            Self::Volume => "volume",
            Self::Snapshot => "snapshot",
            Self::Backup => "backup",
        }
    }
}

/// One resource in `region` (the site's when `None`).
pub fn get(
    cloud: &Cloud,
    kind: Kind,
    region: Option<&str>,
    id: &str,
) -> Result<Value, ProviderError> {
    let path = format!("/{}/{}", kind.collection(), encode(id));
    let mut doc = cloud.get_in(Service::Volume, region, &path)?;
    Ok(doc[kind.one()].take())
}

/// One resource, or `None` when Cinder does not know it.
pub fn find(
    cloud: &Cloud,
    kind: Kind,
    region: Option<&str>,
    id: &str,
) -> Result<Option<Value>, ProviderError> {
    match get(cloud, kind, region, id) {
        Ok(doc) => Ok(Some(doc)),
        Err(ProviderError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The resource named `name` that the plugin created under `key`, if any.
pub fn by_key(
    cloud: &Cloud,
    kind: Kind,
    region: Option<&str>,
    name: &str,
    key: &str,
) -> Result<Option<Value>, ProviderError> {
    let path = format!("/{}/detail?name={}", kind.collection(), encode(name));
    let mut doc = cloud.get_in(Service::Volume, region, &path)?;
    let found = match doc[kind.collection()].take() {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    Ok(found
        .into_iter()
        .find(|d| d["metadata"][KEY] == key && !text(d, "status").starts_with("delet")))
}

/// Create `body` (`{"volume": …}`, `{"snapshot": …}`, `{"backup": …}`)
/// named `name` under `key` once: what an earlier attempt created is
/// returned instead. The key goes into the resource's metadata.
pub fn create_once(
    cloud: &Cloud,
    kind: Kind,
    region: Option<&str>,
    name: &str,
    key: &str,
    mut fields: Value,
) -> Result<String, ProviderError> {
    if let Some(found) = by_key(cloud, kind, region, name, key)? {
        return Ok(text(&found, "id").to_owned());
    }
    fields["name"] = json!(name);
    fields["metadata"][KEY] = json!(key);
    let body = json!({ kind.one(): fields });
    let created = cloud.send_in(
        Verb::Post,
        Service::Volume,
        region,
        &format!("/{}", kind.collection()),
        Some(&body),
        &request_id(
            key,
            &format!(
                "create {} {name} in {}",
                kind.one(),
                region.unwrap_or(&cloud.region)
            ),
        ),
    )?;
    created[kind.one()]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!(
                "Cinder created a {} '{name}' but did not say its id",
                kind.one()
            ))
        })
}

/// Delete; what is already gone counts as deleted.
pub fn delete(
    cloud: &Cloud,
    kind: Kind,
    region: Option<&str>,
    id: &str,
    key: &str,
) -> Result<(), ProviderError> {
    let path = format!("/{}/{}", kind.collection(), encode(id));
    match cloud.send_in(
        Verb::Delete,
        Service::Volume,
        region,
        &path,
        None,
        &request_id(
            key,
            &format!(
                "delete {} {id} in {}",
                kind.one(),
                region.unwrap_or(&cloud.region)
            ),
        ),
    ) {
        Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The snapshots of volume `id`, with their status.
pub fn snapshots_of(cloud: &Cloud, id: &str) -> Result<Vec<Value>, ProviderError> {
    let path = format!("/snapshots/detail?volume_id={}", encode(id));
    let mut doc = cloud.get(Service::Volume, &path)?;
    Ok(match doc["snapshots"].take() {
        Value::Array(list) => list,
        _ => Vec::new(),
    })
}

/// Bytes of a Cinder size in GiB.
pub fn bytes(doc: &Value) -> u64 {
    doc["size"].as_u64().unwrap_or(0).saturating_mul(GIB)
}

/// Whether a resource settled in an error state, with Cinder's reason.
pub fn failure(doc: &Value) -> Option<String> {
    let status = text(doc, "status");
    status.starts_with("error").then(|| {
        let reason = doc["fail_reason"].as_str().unwrap_or("no reason given");
        format!(
            "{} {} is {status}: {reason}",
            text(doc, "name"),
            text(doc, "id")
        )
    })
}

/// Milliseconds since the epoch of an OpenStack timestamp
/// (`2024-05-01T12:00:00.123456`, `…Z`, or with `+00:00`), read as UTC.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim_end_matches('Z');
    let text = text.split('+').next()?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + millis;
    u64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_of_every_service_parse_as_utc() {
        assert_eq!(parse_time("1970-01-01T00:00:01.5"), Some(1500));
        assert_eq!(
            parse_time("2024-05-01T12:00:00.123456"),
            Some(1_714_564_800_123)
        );
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Some(1_714_564_800_000));
        assert_eq!(
            parse_time("2024-05-01T12:00:00+00:00"),
            Some(1_714_564_800_000)
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
