//! The data path for the host's data mover. An export is a
//! VirtualMachineExport of a snapshot: its external link for the disk's
//! volume, read with the export's token (the Secret `status.tokenSecretRef`
//! names) in `x-kubevirt-export-token`. An import is a DataVolume — blank,
//! or a clone of the last copy so that only changed blocks move — written
//! through CDI's upload proxy with an `UploadTokenRequest`'s token. An
//! import's DataVolume is labelled as one, so `cleanup` can tell it from
//! other volumes when the host discards it.

use base64::Engine as _;
use rebound_plugin_sdk::{
    DiskEndpoint, DiskFormat, ExportRequest, ImportRequest, Operation, OperationKind,
    OperationState, Outcome, ProviderError, Running, info, site,
};
use serde_json::{Value, json};

use crate::kube::Cluster;
use crate::names::{self, KEY_ANNOTATION};
use crate::points;

/// The annotation naming the disk (PVC) an export is for.
const DISK_ANNOTATION: &str = "rebound.io/disk";
/// Prefix of export names, which tells `cleanup` an export from an import.
pub const EXPORT_PREFIX: &str = "rebound-exp";
/// The label on the DataVolumes `import` creates (CDI passes a
/// DataVolume's labels on to its PVC).
pub const IMPORT_LABEL: &str = "rebound.io/import";

/// Whether `import` created this DataVolume: it carries the import label
/// and the idempotency key it was created under.
pub fn is_import(dv: &Value) -> bool {
    dv["metadata"]["labels"][IMPORT_LABEL] == "true"
        && dv["metadata"]["annotations"][KEY_ANNOTATION].is_string()
}

fn raw_only(format: DiskFormat) -> Result<(), ProviderError> {
    match format {
        DiskFormat::Raw => Ok(()),
        other => Err(ProviderError::Unsupported(format!(
            "KubeVirt exports and imports raw images only, not {other:?}"
        ))),
    }
}

pub fn export(req: &ExportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    let cluster = Cluster::of(&req.site)?;
    let snapshot = cluster
        .get_opt(&format!(
            "{}/{}",
            cluster.snapshots(),
            req.recovery_point_id
        ))?
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "no recovery point (VirtualMachineSnapshot) '{}' on site '{}'",
                req.recovery_point_id, req.site
            ))
        })?;
    let content = points::content(&cluster, &snapshot)?;
    if !points::backups(&content)
        .iter()
        .any(|(claim, _, _)| *claim == req.disk_id)
    {
        return Err(ProviderError::NotFound(format!(
            "recovery point '{}' holds no disk '{}'",
            req.recovery_point_id, req.disk_id
        )));
    }
    let name = names::derived(EXPORT_PREFIX, &req.key);
    let ttl = site::get(&req.site, "export_ttl").unwrap_or_else(|| "2h".into());
    let body = json!({
        "apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
        "metadata": {"name": name,
                     "annotations": {KEY_ANNOTATION: req.key, DISK_ANNOTATION: req.disk_id}},
        "spec": {"source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot",
                            "name": req.recovery_point_id},
                 "ttlDuration": ttl},
    });
    cluster.create(&cluster.exports(), &body)?;
    info!("export requested"; "export" => name, "snapshot" => req.recovery_point_id, "disk" => req.disk_id);
    Ok(Operation {
        kind: OperationKind::ExportDisk,
        site: req.site.clone(),
        id: name,
    })
}

fn running(detail: impl Into<String>, percent: Option<u8>) -> OperationState {
    OperationState::Running(Running {
        percent,
        detail: detail.into(),
    })
}

/// The token a Secret holds in `data.token`.
fn secret_token(cluster: &Cluster, name: &str) -> Result<String, ProviderError> {
    let secret = cluster.get(&format!("{}/{name}", cluster.secrets()))?;
    secret["data"]["token"]
        .as_str()
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .and_then(|t| String::from_utf8(t).ok())
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!("export token Secret '{name}' has no data.token"))
        })
}

pub fn export_status(cluster: &Cluster, name: &str) -> Result<OperationState, ProviderError> {
    let export = cluster.get(&format!("{}/{name}", cluster.exports()))?;
    let status = &export["status"];
    if status["phase"] != "Ready" {
        let why = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|c| c["message"].as_str())
            .unwrap_or_else(|| status["phase"].as_str().unwrap_or("Pending"));
        return Ok(running(why, None));
    }
    let disk = export["metadata"]["annotations"][DISK_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    let links = &status["links"];
    let link = if links["external"]["volumes"].is_array() {
        &links["external"]
    } else {
        &links["internal"]
    };
    let volumes = link["volumes"].as_array().cloned().unwrap_or_default();
    let volume = volumes
        .iter()
        .find(|v| v["name"] == disk)
        .or_else(|| (volumes.len() == 1).then(|| &volumes[0]))
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!("export '{name}' serves no volume '{disk}'"))
        })?;
    let url = volume["formats"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["format"] == "raw")
        .and_then(|f| f["url"].as_str())
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!(
                "export '{name}' offers no raw format of volume '{disk}'"
            ))
        })?;
    let secret = status["tokenSecretRef"]
        .as_str()
        .or_else(|| export["spec"]["tokenSecretRef"].as_str())
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!("export '{name}' names no token Secret"))
        })?;
    let token = secret_token(cluster, secret)?;
    let snapshot = export["spec"]["source"]["name"]
        .as_str()
        .unwrap_or_default();
    let snapshot = cluster.get(&format!("{}/{snapshot}", cluster.snapshots()))?;
    let size = points::backups(&points::content(cluster, &snapshot)?)
        .into_iter()
        .find(|(claim, _, _)| claim == disk)
        .map(|(_, _, size)| size)
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!(
                "the snapshot of export '{name}' lost disk '{disk}'"
            ))
        })?;
    Ok(OperationState::Succeeded(Outcome::DiskEndpoint(
        DiskEndpoint {
            url: url.to_owned(),
            format: DiskFormat::Raw,
            size_bytes: size,
            headers: vec![("x-kubevirt-export-token".into(), token)],
            ranged: true,
            block_digests: true,
            volume_id: None,
            expires_at: status["ttlExpirationTime"]
                .as_str()
                .and_then(names::rfc3339_ms),
        },
    )))
}

pub fn import(req: &ImportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    if req.size_bytes == 0 {
        return Err(ProviderError::InvalidRequest(format!(
            "import '{}' asks for an empty volume",
            req.name
        )));
    }
    let cluster = Cluster::of(&req.site)?;
    let source = match &req.volume_id {
        Some(base) => base_source(&cluster, base, req.size_bytes)?,
        None => json!({"blank": {}}),
    };
    let name = names::derived(&req.name, &req.key);
    let body = json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name, "labels": {IMPORT_LABEL: "true"},
                     "annotations": {KEY_ANNOTATION: req.key}},
        "spec": {"source": source,
                 "storage": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                             "resources": {"requests": {"storage": req.size_bytes.to_string()}}}},
    });
    cluster.create(&cluster.data_volumes(), &body)?;
    info!("import volume requested"; "datavolume" => name, "base" => req.volume_id.clone().unwrap_or_default());
    Ok(Operation {
        kind: OperationKind::ImportDisk,
        site: req.site.clone(),
        id: name,
    })
}

/// The CDI source that starts an import as a copy of `base`: a clone of
/// the PVC of that name (an earlier import), else a restore of the volume
/// snapshot of that name (a disk of one of this site's recovery points).
fn base_source(cluster: &Cluster, base: &str, size: u64) -> Result<Value, ProviderError> {
    let found = match cluster.get_opt(&format!("{}/{base}", cluster.pvcs()))? {
        Some(pvc) => crate::spec::claim_sizes(std::slice::from_ref(&pvc))
            .remove(base)
            .map(|bytes| {
                (
                    json!({"pvc": {"namespace": cluster.namespace, "name": base}}),
                    bytes,
                )
            }),
        None => cluster
            .list(&cluster.snapshot_contents(), None)?
            .iter()
            .flat_map(points::backups)
            .find(|(_, volume_snapshot, _)| volume_snapshot == base)
            .map(|(_, _, bytes)| {
                (
                    json!({"snapshot": {"namespace": cluster.namespace, "name": base}}),
                    bytes,
                )
            }),
    };
    let (source, bytes) = found.ok_or_else(|| {
        ProviderError::NotFound(format!(
            "no volume (PVC) or volume snapshot '{base}' to import onto in namespace '{}'",
            cluster.namespace
        ))
    })?;
    if bytes != size {
        return Err(ProviderError::InvalidRequest(format!(
            "'{base}' holds {bytes} bytes, not the {size} asked for"
        )));
    }
    Ok(source)
}

/// Where the upload proxy is: the site's `upload_proxy_url`, else what the
/// CDIConfig says (a bare host means HTTPS).
fn upload_proxy(cluster: &Cluster) -> Result<String, ProviderError> {
    let configured = match site::get(&cluster.site, "upload_proxy_url") {
        Some(url) => url,
        None => {
            let config = cluster.get("/apis/cdi.kubevirt.io/v1beta1/cdiconfigs/config")?;
            config["status"]["uploadProxyURL"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    ProviderError::ProviderFailed(
                        "the CDIConfig 'config' names no uploadProxyURL; set the site's \
                         upload_proxy_url"
                            .into(),
                    )
                })?
        }
    };
    let url = if configured.contains("://") {
        configured
    } else {
        format!("https://{configured}")
    };
    Ok(format!("{}/v1beta1/upload", url.trim_end_matches('/')))
}

pub fn import_status(cluster: &Cluster, name: &str) -> Result<OperationState, ProviderError> {
    let dv = cluster.get(&format!("{}/{name}", cluster.data_volumes()))?;
    let status = &dv["status"];
    match status["phase"].as_str() {
        Some("Succeeded" | "UploadReady") => {}
        Some("Failed") => {
            let why = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|c| c["message"].as_str())
                .unwrap_or("no reason given");
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                format!("DataVolume '{name}' failed: {why}"),
            )));
        }
        phase => {
            let percent = status["progress"]
                .as_str()
                .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
                .map(|p| p.clamp(0.0, 100.0) as u8);
            return Ok(running(phase.unwrap_or("Pending"), percent));
        }
    }
    let pvc = cluster.get(&format!("{}/{name}", cluster.pvcs()))?;
    let size = crate::spec::claim_sizes(std::slice::from_ref(&pvc))
        .remove(name)
        .ok_or_else(|| ProviderError::ProviderFailed(format!("PVC '{name}' has no size")))?;
    let request = json!({
        "apiVersion": "upload.cdi.kubevirt.io/v1beta1", "kind": "UploadTokenRequest",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": {"pvcName": name},
    });
    let answer: Value = cluster.create(&cluster.upload_tokens(), &request)?;
    let token = answer["status"]["token"].as_str().ok_or_else(|| {
        ProviderError::ProviderFailed(format!(
            "the upload token request for '{name}' returned no token"
        ))
    })?;
    Ok(OperationState::Succeeded(Outcome::DiskEndpoint(
        DiskEndpoint {
            url: upload_proxy(cluster)?,
            format: DiskFormat::Raw,
            size_bytes: size,
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ranged: true,
            block_digests: true,
            volume_id: Some(name.to_owned()),
            expires_at: None,
        },
    )))
}
