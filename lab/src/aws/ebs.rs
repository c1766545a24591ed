//! The EBS direct APIs (REST-JSON, SigV4 service `ebs`), served by the lab
//! itself because moto's are a separate store that cannot read EC2
//! snapshots: StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
//! ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock. Blocks are
//! 512 KiB of the snapshot's data file; a snapshot started here is created
//! in moto too (from a scratch volume), so EC2 sees it like AWS would.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::faults::error;
use super::front::form;
use super::{BLOCK_SIZE, Shared, Snapshot, xml_text};

type Reply = Result<Response, Response>;

pub(crate) async fn handle(
    shared: &Shared,
    region: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let params = form(query);
    // Snapshots are regional: another region's is not found here.
    let named = match segments.as_slice() {
        ["snapshots", "completion", id] | ["snapshots", id, ..] => Some(*id),
        _ => None,
    };
    let elsewhere = named.is_some_and(|id| {
        shared
            .lock()
            .snapshots
            .get(id)
            .is_some_and(|s| s.region != region)
    });
    if let (true, Some(id)) = (elsewhere, named) {
        return not_found(id);
    }
    let result = match (method, segments.as_slice()) {
        ("POST", ["snapshots"]) => start(shared, region, body).await,
        ("POST", ["snapshots", "completion", id]) => complete(shared, id),
        ("PUT", ["snapshots", id, "blocks", index]) => put_block(shared, id, index, headers, body),
        ("GET", ["snapshots", id, "blocks"]) => list_blocks(shared, id, &params),
        ("GET", ["snapshots", id, "changedblocks"]) => changed_blocks(shared, id, &params),
        ("GET", ["snapshots", id, "blocks", index]) => get_block(shared, id, index, &params),
        _ => Err(invalid(&format!("no EBS direct operation {method} {path}"))),
    };
    if method != "GET" {
        let op = match segments.as_slice() {
            ["snapshots"] => "StartSnapshot",
            ["snapshots", "completion", _] => "CompleteSnapshot",
            _ => "PutSnapshotBlock",
        };
        *shared
            .lock()
            .effects
            .entry(format!("ebs {op}"))
            .or_default() += 1;
    }
    result.unwrap_or_else(|e| e)
}

fn invalid(message: &str) -> Response {
    error(
        "ebs",
        StatusCode::BAD_REQUEST,
        "ValidationException",
        message,
    )
}

fn not_found(id: &str) -> Response {
    error(
        "ebs",
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        &format!("The snapshot '{id}' does not exist."),
    )
}

fn io(e: std::io::Error) -> Response {
    error(
        "ebs",
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerException",
        &e.to_string(),
    )
}

fn epoch_secs(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn block_token(id: &str, index: u64) -> String {
    let digest = Sha256::digest(format!("{id}/{index}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..24])
}

/// The snapshot, if the lab knows it and its data.
fn snapshot(shared: &Shared, id: &str) -> Result<Snapshot, Response> {
    let known = shared.lock().snapshots.get(id).cloned();
    match known {
        Some(s) if shared.disks.exists(id) => Ok(s),
        _ => Err(not_found(id)),
    }
}

fn completed(shared: &Shared, id: &str) -> Result<Snapshot, Response> {
    let s = snapshot(shared, id)?;
    match s.settles {
        Some(at) if at <= Instant::now() => Ok(s),
        _ => Err(error(
            "ebs",
            StatusCode::BAD_REQUEST,
            "ValidationException",
            &format!("The snapshot '{id}' is not completed yet."),
        )),
    }
}

async fn start(shared: &Shared, region: &str, body: &[u8]) -> Reply {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| invalid(&format!("malformed JSON: {e}")))?;
    let size = request["VolumeSize"]
        .as_u64()
        .filter(|s| *s > 0)
        .ok_or_else(|| invalid("VolumeSize must be a positive number of GiB"))?;
    let token = request["ClientToken"].as_str().map(str::to_owned);
    if let Some(token) = &token {
        let existing = shared.lock().tokens.get(token).cloned();
        if let Some(id) = existing {
            let s = snapshot(shared, &id)?;
            return Ok(started(&id, &s, &request, StatusCode::CREATED));
        }
    }
    let parent = request["ParentSnapshotId"].as_str();
    if let Some(parent) = parent {
        completed(shared, parent)?;
    }
    // The snapshot exists in EC2 too: moto makes it from a scratch volume.
    let az = format!("{region}a");
    let size_text = size.to_string();
    let failed = |e: String| {
        error(
            "ebs",
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            &e,
        )
    };
    let volume = ec2(
        shared,
        region,
        &[
            ("Action", "CreateVolume"),
            ("Size", &size_text),
            ("AvailabilityZone", &az),
        ],
    )
    .await
    .map_err(failed)?;
    let vol = xml_text(&volume, "volumeId")
        .ok_or_else(|| failed("moto's CreateVolume reply has no volumeId".into()))?
        .to_owned();
    let description = request["Description"].as_str().unwrap_or_default();
    let mut params = vec![
        ("Action", "CreateSnapshot"),
        ("VolumeId", vol.as_str()),
        ("Description", description),
    ];
    let tags: Vec<(String, String)> = request["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["Key"].as_str()?.to_owned(),
                t["Value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let tag_params: Vec<(String, String)> = tags
        .iter()
        .enumerate()
        .flat_map(|(i, (k, v))| {
            [
                (format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()),
                (format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()),
            ]
        })
        .collect();
    if !tags.is_empty() {
        params.push(("TagSpecification.1.ResourceType", "snapshot"));
        params.extend(tag_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    let created = ec2(shared, region, &params).await.map_err(failed)?;
    let id = xml_text(&created, "snapshotId")
        .ok_or_else(|| failed("moto's CreateSnapshot reply has no snapshotId".into()))?
        .to_owned();
    let _ = ec2(
        shared,
        region,
        &[("Action", "DeleteVolume"), ("VolumeId", &vol)],
    )
    .await;
    match parent {
        Some(parent) => shared.disks.copy(parent, &id).map(drop),
        None => shared
            .disks
            .create(&id, size.saturating_mul(shared.options.gib))
            .map(drop),
    }
    .map_err(io)?;
    let now = Instant::now();
    let s = Snapshot {
        region: region.to_owned(),
        size_gib: size,
        settles: None,
        started: now,
    };
    let mut state = shared.lock();
    state.snapshots.insert(id.clone(), s.clone());
    if let Some(token) = token {
        state.tokens.insert(token, id.clone());
    }
    drop(state);
    Ok(started(&id, &s, &request, StatusCode::CREATED))
}

async fn ec2(shared: &Shared, region: &str, params: &[(&str, &str)]) -> Result<String, String> {
    super::seed::query(shared, &shared.moto, region, "ec2", params).await
}

fn started(id: &str, s: &Snapshot, request: &Value, status: StatusCode) -> Response {
    let start = SystemTime::now() - s.started.elapsed();
    (
        status,
        axum::Json(json!({
            "SnapshotId": id,
            "OwnerId": "123456789012",
            "Status": if s.settles.is_some() { "completed" } else { "pending" },
            "StartTime": epoch_secs(start),
            "VolumeSize": s.size_gib,
            "BlockSize": BLOCK_SIZE,
            "Tags": request["Tags"].clone(),
            "ParentSnapshotId": request["ParentSnapshotId"].clone(),
            "Description": request["Description"].clone(),
        })),
    )
        .into_response()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn block_index(s: &Snapshot, shared: &Shared, index: &str) -> Result<u64, Response> {
    let index: u64 = index
        .parse()
        .map_err(|_| invalid(&format!("'{index}' is not a block index")))?;
    let blocks = s
        .size_gib
        .saturating_mul(shared.options.gib)
        .div_ceil(BLOCK_SIZE);
    if index >= blocks {
        return Err(invalid(&format!(
            "block index {index} is past the volume's {blocks} blocks"
        )));
    }
    Ok(index)
}

fn put_block(
    shared: &Shared,
    id: &str,
    index: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let s = snapshot(shared, id)?;
    if s.settles.is_some() {
        return Err(error(
            "ebs",
            StatusCode::CONFLICT,
            "ConflictException",
            &format!("The snapshot '{id}' is already completed."),
        ));
    }
    let index = block_index(&s, shared, index)?;
    if body.len() as u64 != BLOCK_SIZE {
        return Err(invalid(&format!(
            "a block is {BLOCK_SIZE} bytes; got {}",
            body.len()
        )));
    }
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    match (
        header(headers, "x-amz-checksum"),
        header(headers, "x-amz-checksum-algorithm"),
    ) {
        (Some(given), Some("SHA256")) if given == checksum => {}
        (Some(_), Some("SHA256")) => {
            return Err(invalid("the block's checksum does not match its data"));
        }
        _ => {
            return Err(invalid(
                "x-amz-Checksum and x-amz-Checksum-Algorithm: SHA256 are required",
            ));
        }
    }
    shared
        .disks
        .write(id, index * BLOCK_SIZE, body)
        .map_err(io)?;
    let mut response = StatusCode::CREATED.into_response();
    for (k, v) in [
        ("x-amz-Checksum", checksum.as_str()),
        ("x-amz-Checksum-Algorithm", "SHA256"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            response.headers_mut().insert(k, v);
        }
    }
    Ok(response)
}

fn complete(shared: &Shared, id: &str) -> Reply {
    snapshot(shared, id)?;
    let settles = Instant::now() + shared.options.snapshot_latency;
    if let Some(s) = shared.lock().snapshots.get_mut(id)
        && s.settles.is_none()
    {
        s.settles = Some(settles);
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "Status": "pending" })),
    )
        .into_response())
}

/// A page of block indexes from `ranges` (byte ranges of data).
fn page(
    ranges: &[(u64, u64)],
    params: &std::collections::HashMap<String, String>,
) -> Result<(Vec<u64>, Option<String>), Response> {
    let max: usize = params
        .get("maxResults")
        .map(|m| m.parse().map_err(|_| invalid("maxResults is not a number")))
        .transpose()?
        .unwrap_or(10_000)
        .clamp(100, 10_000);
    let from: u64 = params
        .get("pageToken")
        .or(params.get("startingBlockIndex"))
        .map(|m| {
            m.parse()
                .map_err(|_| invalid("bad pageToken or startingBlockIndex"))
        })
        .transpose()?
        .unwrap_or(0);
    let mut blocks: Vec<u64> = ranges
        .iter()
        .flat_map(|(offset, len)| (offset / BLOCK_SIZE)..(offset + len).div_ceil(BLOCK_SIZE))
        .filter(|b| *b >= from)
        .collect();
    blocks.dedup();
    let next = (blocks.len() > max).then(|| blocks[max].to_string());
    blocks.truncate(max);
    Ok((blocks, next))
}

/// The byte ranges of `id` holding data: where it differs from zeros.
fn data_ranges(shared: &Shared, id: &str) -> Result<Vec<(u64, u64)>, Response> {
    let size = shared.disks.size(id).map_err(io)?;
    let zeros = format!("zeros-{size}");
    if !shared.disks.exists(&zeros) {
        shared.disks.create(&zeros, size).map_err(io)?;
    }
    shared
        .disks
        .changed_ranges(&zeros, id, BLOCK_SIZE)
        .map_err(io)
}

fn expiry() -> f64 {
    epoch_secs(SystemTime::now() + Duration::from_secs(7 * 24 * 3600))
}

fn list_blocks(
    shared: &Shared,
    id: &str,
    params: &std::collections::HashMap<String, String>,
) -> Reply {
    let s = completed(shared, id)?;
    let (blocks, next) = page(&data_ranges(shared, id)?, params)?;
    let blocks: Vec<Value> = blocks
        .iter()
        .map(|b| json!({ "BlockIndex": b, "BlockToken": block_token(id, *b) }))
        .collect();
    let mut body = json!({
        "Blocks": blocks,
        "ExpiryTime": expiry(),
        "VolumeSize": s.size_gib,
        "BlockSize": BLOCK_SIZE,
    });
    if let Some(next) = next {
        body["NextToken"] = json!(next);
    }
    Ok(axum::Json(body).into_response())
}

fn changed_blocks(
    shared: &Shared,
    second: &str,
    params: &std::collections::HashMap<String, String>,
) -> Reply {
    let s = completed(shared, second)?;
    let ranges = match params.get("firstSnapshotId") {
        Some(first) => {
            completed(shared, first)?;
            if shared.disks.size(first).map_err(io)? != shared.disks.size(second).map_err(io)? {
                return Err(invalid(
                    "the two snapshots are not of volumes of the same size",
                ));
            }
            shared
                .disks
                .changed_ranges(first, second, BLOCK_SIZE)
                .map_err(io)?
        }
        None => data_ranges(shared, second)?,
    };
    let first = params.get("firstSnapshotId");
    let (blocks, next) = page(&ranges, params)?;
    let blocks: Vec<Value> = blocks
        .iter()
        .map(|b| {
            let mut block = json!({
                "BlockIndex": b,
                "SecondBlockToken": block_token(second, *b),
            });
            if let Some(first) = first {
                block["FirstBlockToken"] = json!(block_token(first, *b));
            }
            block
        })
        .collect();
    let mut body = json!({
        "ChangedBlocks": blocks,
        "ExpiryTime": expiry(),
        "VolumeSize": s.size_gib,
        "BlockSize": BLOCK_SIZE,
    });
    if let Some(next) = next {
        body["NextToken"] = json!(next);
    }
    Ok(axum::Json(body).into_response())
}

fn get_block(
    shared: &Shared,
    id: &str,
    index: &str,
    params: &std::collections::HashMap<String, String>,
) -> Reply {
    let s = completed(shared, id)?;
    let index = block_index(&s, shared, index)?;
    if params.get("blockToken").map(String::as_str) != Some(block_token(id, index).as_str()) {
        return Err(invalid("the block token is not valid for this block"));
    }
    let size = shared.disks.size(id).map_err(io)?;
    let offset = index * BLOCK_SIZE;
    let len = BLOCK_SIZE.min(size - offset);
    let mut data = shared
        .disks
        .read_at(id, offset, usize::try_from(len).unwrap_or(0))
        .map_err(io)?;
    data.resize(BLOCK_SIZE as usize, 0);
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
    let mut response = (StatusCode::OK, data).into_response();
    for (k, v) in [
        ("x-amz-Data-Length", BLOCK_SIZE.to_string()),
        ("x-amz-Checksum", checksum),
        ("x-amz-Checksum-Algorithm", "SHA256".to_owned()),
        ("content-type", "application/octet-stream".to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            response.headers_mut().insert(k, v);
        }
    }
    Ok(response)
}
