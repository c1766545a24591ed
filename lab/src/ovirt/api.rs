//! The engine API v4 under `/ovirt-engine/api`: XML in and out, bearer
//! tokens from SSO, oVirt's `<fault>` documents on errors, actions
//! answering `<action><status>complete</status></action>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rebound_plugin_sdk::xml::Element;

use super::state::{
    API, Backup, Checkpoint, Disk, Engine, Job, Nic, Snapshot, Source, Stages, Transfer, Vm,
    disk_image, linked, list, now_iso, uuid,
};
use super::{Shared, fault};

type Answer = Result<Response, Response>;

fn xml(status: StatusCode, doc: &Element) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml;charset=UTF-8")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n{}",
            doc.to_xml()
        ),
    )
        .into_response()
}

fn ok(doc: &Element) -> Answer {
    Ok(xml(StatusCode::OK, doc))
}

fn created(doc: &Element) -> Answer {
    Ok(xml(StatusCode::CREATED, doc))
}

fn action_done() -> Answer {
    ok(&Element::new("action").with_text("status", "complete"))
}

fn not_found(what: &str) -> Response {
    fault(
        StatusCode::NOT_FOUND,
        "Operation Failed",
        &format!("Entity not found: {what}"),
    )
}

fn conflict(detail: &str) -> Response {
    fault(
        StatusCode::CONFLICT,
        "Operation Failed",
        &format!("[{detail}]"),
    )
}

fn bad(detail: &str) -> Response {
    fault(StatusCode::BAD_REQUEST, "Incomplete parameters", detail)
}

fn parse(body: &[u8]) -> Result<Element, Response> {
    Element::parse(body).map_err(|e| {
        fault(
            StatusCode::BAD_REQUEST,
            "Request syntactically incorrect.",
            &format!("The request body could not be parsed: {e}"),
        )
    })
}

fn query<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `name=web-1` or `correlation_id=X` of a `search` parameter: the field's
/// wanted value (`*` matches anything after it).
fn search<'a>(q: &'a [(String, String)], field: &str) -> Option<&'a str> {
    let s = query(q, "search")?;
    s.split(" and ")
        .filter_map(|clause| clause.trim().split_once('='))
        .find(|(k, _)| k.trim() == field)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// A MAC from the engine's default pool (`56:6f:…`).
fn mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("56:6f:c4:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

pub(super) async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| shared.lock().tokens.contains_key(t.trim()));
    if !authorized {
        return fault(
            StatusCode::UNAUTHORIZED,
            "Operation Failed",
            "Authentication required: send a bearer token from /ovirt-engine/sso/oauth/token",
        );
    }
    let path = uri.path().strip_prefix(API).unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match route(&shared, &method, &segments, &q, &body) {
        Ok(r) | Err(r) => r,
    }
}

fn route(
    shared: &Shared,
    method: &Method,
    segments: &[&str],
    q: &[(String, String)],
    body: &[u8],
) -> Answer {
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    match segments {
        [] if get => ok(&root(shared)),
        ["vms"] if get => list_vms(shared, q),
        ["vms"] if post => add_vm(shared, q, body),
        ["vms", id] if get => {
            let e = shared.lock();
            let vm = e.vms.get(*id).ok_or_else(|| not_found(id))?;
            ok(&e.render_vm(vm))
        }
        ["vms", id] if delete => remove_vm(shared, id, q),
        ["vms", id, action @ ("start" | "stop" | "shutdown")] if post => power(shared, id, action),
        ["vms", id, "diskattachments"] if get => {
            let e = shared.lock();
            let vm = e.vms.get(*id).ok_or_else(|| not_found(id))?;
            ok(&list(
                "disk_attachments",
                vm.disks
                    .iter()
                    .map(|(d, boot)| e.render_attachment(id, d, *boot)),
            ))
        }
        ["vms", id, "diskattachments"] if post => attach(shared, id, body),
        ["vms", id, "diskattachments", disk] if delete => detach(shared, id, disk, q),
        ["vms", id, "nics"] if get => {
            let e = shared.lock();
            let vm = e.vms.get(*id).ok_or_else(|| not_found(id))?;
            ok(&list("nics", vm.nics.iter().map(|n| e.render_nic(id, n))))
        }
        ["vms", id, "nics"] if post => add_nic(shared, id, body),
        ["vms", id, "tags"] if get => {
            let e = shared.lock();
            let vm = e.vms.get(*id).ok_or_else(|| not_found(id))?;
            ok(&list("tags", vm.tags.iter().map(|t| tag(t))))
        }
        ["vms", id, "tags"] if post => add_tag(shared, id, body),
        ["vms", id, "tags", tag_id] if delete => {
            let mut e = shared.lock();
            let vm = e.vms.get_mut(*id).ok_or_else(|| not_found(id))?;
            let before = vm.tags.len();
            vm.tags.retain(|t| tag_id_of(t) != *tag_id);
            if vm.tags.len() == before {
                return Err(not_found(tag_id));
            }
            Ok(StatusCode::OK.into_response())
        }
        ["vms", id, "snapshots"] if get => {
            let e = shared.lock();
            let vm = e.vms.get(*id).ok_or_else(|| not_found(id))?;
            let snaps = std::iter::once(e.render_active_snapshot(vm)).chain(
                e.snapshots
                    .values()
                    .filter(|s| s.vm == *id)
                    .map(|s| e.render_snapshot(s)),
            );
            ok(&list("snapshots", snaps))
        }
        ["vms", id, "snapshots"] if post => add_snapshot(shared, id, q, body),
        ["vms", id, "snapshots", sid] if get => {
            let e = shared.lock();
            let s = e
                .snapshots
                .get(*sid)
                .filter(|s| s.vm == *id)
                .ok_or_else(|| not_found(sid))?;
            ok(&e.render_snapshot(s))
        }
        ["vms", id, "snapshots", sid] if delete => remove_snapshot(shared, id, sid),
        ["vms", id, "snapshots", sid, "disks"] if get => {
            let e = shared.lock();
            let s = e
                .snapshots
                .get(*sid)
                .filter(|s| s.vm == *id)
                .ok_or_else(|| not_found(sid))?;
            let disks = s.images.iter().filter_map(|(disk, image)| {
                let d = e.disks.get(disk)?;
                let actual = shared.allocated(image);
                Some(
                    e.render_disk(d, actual)
                        .with(Element::new("image_id").with_text_value(image))
                        .with(Element::new("snapshot").with_attr("id", *sid)),
                )
            });
            ok(&list("disks", disks))
        }
        ["vms", id, "backups"] if post => add_backup(shared, id, body),
        ["vms", id, "backups"] if get => {
            let e = shared.lock();
            ok(&list(
                "backups",
                e.backups
                    .values()
                    .filter(|b| b.vm == *id)
                    .map(|b| e.render_backup(b)),
            ))
        }
        ["vms", id, "backups", bid] if get => {
            let e = shared.lock();
            let b = e
                .backups
                .get(*bid)
                .filter(|b| b.vm == *id)
                .ok_or_else(|| not_found(bid))?;
            ok(&e.render_backup(b))
        }
        ["vms", id, "backups", bid, "finalize"] if post => finalize_backup(shared, id, bid),
        ["vms", id, "checkpoints"] if get => {
            let e = shared.lock();
            ok(&list(
                "checkpoints",
                e.checkpoints
                    .values()
                    .filter(|c| c.vm == *id)
                    .map(|c| e.render_checkpoint(c)),
            ))
        }
        ["vms", id, "checkpoints", cid] if delete => remove_checkpoint(shared, id, cid),
        ["disks"] if get => {
            let e = shared.lock();
            let wanted = search(q, "name");
            let disks = e
                .disks
                .values()
                .filter(|d| wanted.is_none_or(|w| matches(w, &d.alias)))
                .map(|d| e.render_disk(d, shared.allocated(&disk_image(&d.id))));
            ok(&list("disks", disks))
        }
        ["disks"] if post => add_disk(shared, body),
        ["disks", id] if get => {
            let e = shared.lock();
            let d = e.disks.get(*id).ok_or_else(|| not_found(id))?;
            ok(&e.render_disk(d, shared.allocated(&disk_image(id))))
        }
        ["disks", id] if delete => remove_disk(shared, id),
        ["disks", id, "copy"] if post => copy_disk(shared, id, body),
        ["jobs"] if get => {
            let e = shared.lock();
            let wanted = search(q, "correlation_id");
            ok(&list(
                "jobs",
                e.jobs
                    .values()
                    .filter(|j| wanted.is_none_or(|w| matches(w, &j.correlation_id)))
                    .map(|j| e.render_job(j)),
            ))
        }
        ["jobs", id] if get => {
            let e = shared.lock();
            let j = e.jobs.get(*id).ok_or_else(|| not_found(id))?;
            ok(&e.render_job(j))
        }
        ["imagetransfers"] if get => {
            let e = shared.lock();
            ok(&list(
                "image_transfers",
                e.transfers
                    .values()
                    .map(|t| e.render_transfer(t, &shared.base)),
            ))
        }
        ["imagetransfers"] if post => add_transfer(shared, body),
        ["imagetransfers", id] if get => {
            let e = shared.lock();
            let t = e.transfers.get(*id).ok_or_else(|| not_found(id))?;
            ok(&e.render_transfer(t, &shared.base))
        }
        ["imagetransfers", id, action @ ("finalize" | "cancel")] if post => {
            end_transfer(shared, id, *action == "finalize")
        }
        ["clusters"] if get => {
            let e = shared.lock();
            ok(&list(
                "clusters",
                [
                    linked("cluster", &format!("clusters/{}", e.cluster), &e.cluster)
                        .with_text("name", "Default")
                        .with_text("bios_type", "q35_sea_bios"),
                ],
            ))
        }
        ["storagedomains"] if get => {
            let e = shared.lock();
            let used: u64 = e
                .disks
                .keys()
                .map(|d| shared.allocated(&disk_image(d)))
                .sum();
            ok(&list(
                "storage_domains",
                [linked(
                    "storage_domain",
                    &format!("storagedomains/{}", e.storage_domain),
                    &e.storage_domain,
                )
                .with_text("name", "data")
                .with_text("type", "data")
                .with_text("external_status", "ok")
                .with_text("status", "active")
                .with_text("used", used)
                .with_text("available", 1u64 << 40)],
            ))
        }
        ["storagedomains", sd, "disksnapshots"] if get => {
            let e = shared.lock();
            if *sd != e.storage_domain {
                return Err(not_found(sd));
            }
            let snaps = e.snapshots.values().flat_map(|s| {
                s.images.iter().filter_map(|(disk, image)| {
                    let d = e.disks.get(disk)?;
                    Some(
                        linked(
                            "disk_snapshot",
                            &format!("storagedomains/{sd}/disksnapshots/{image}"),
                            image,
                        )
                        .with_text("name", &d.alias)
                        .with_text("provisioned_size", d.size)
                        .with_text("actual_size", shared.allocated(image))
                        .with_text("status", "ok")
                        .with(linked("disk", &format!("disks/{disk}"), disk))
                        .with(linked(
                            "snapshot",
                            &format!("vms/{}/snapshots/{}", s.vm, s.id),
                            &s.id,
                        )),
                    )
                })
            });
            ok(&list("disk_snapshots", snaps))
        }
        ["networks"] if get => {
            let e = shared.lock();
            ok(&list(
                "networks",
                e.networks.iter().map(|n| {
                    linked("network", &format!("networks/{}", n.id), &n.id)
                        .with_text("name", &n.name)
                        .with(linked("data_center", "datacenters/dc", "dc"))
                }),
            ))
        }
        ["vnicprofiles"] if get => {
            let e = shared.lock();
            ok(&list("vnic_profiles", e.networks.iter().map(profile)))
        }
        ["vnicprofiles", id] if get => {
            let e = shared.lock();
            let n = e.network_by_profile(id).ok_or_else(|| not_found(id))?;
            ok(&profile(n))
        }
        _ => Err(not_found(&format!("{method} {API}/{}", segments.join("/")))),
    }
}

fn profile(n: &super::state::Network) -> Element {
    linked(
        "vnic_profile",
        &format!("vnicprofiles/{}", n.profile),
        &n.profile,
    )
    .with_text("name", &n.name)
    .with(linked("network", &format!("networks/{}", n.id), &n.id))
}

trait TextValue {
    fn with_text_value(self, text: &str) -> Self;
}

impl TextValue for Element {
    fn with_text_value(mut self, text: &str) -> Self {
        self.text = text.to_owned();
        self
    }
}

fn root(shared: &Shared) -> Element {
    let e = shared.lock();
    let active = e
        .vms
        .values()
        .filter(|v| v.status.current() == "up")
        .count();
    Element::new("api")
        .with(
            Element::new("link")
                .with_attr("href", format!("{API}/vms"))
                .with_attr("rel", "vms"),
        )
        .with(
            Element::new("product_info")
                .with_text("instance_id", &e.cluster)
                .with_text("name", "oVirt Engine")
                .with_text("vendor", "ovirt.org")
                .with(
                    Element::new("version")
                        .with_text("build", 6)
                        .with_text("full_version", "4.5.6-1.el9")
                        .with_text("major", 4)
                        .with_text("minor", 5)
                        .with_text("revision", 0),
                ),
        )
        .with(
            Element::new("summary")
                .with(
                    Element::new("vms")
                        .with_text("active", active)
                        .with_text("total", e.vms.len()),
                )
                .with(
                    Element::new("storage_domains")
                        .with_text("active", 1)
                        .with_text("total", 1),
                ),
        )
        .with_text("time", now_iso())
        .with(Element::new("authenticated_user").with_attr("id", "admin"))
}

fn list_vms(shared: &Shared, q: &[(String, String)]) -> Answer {
    let e = shared.lock();
    let wanted = search(q, "name");
    ok(&list(
        "vms",
        e.vms
            .values()
            .filter(|v| wanted.is_none_or(|w| matches(w, &v.name)))
            .map(|v| e.render_vm(v)),
    ))
}

/// A job for an asynchronous command, found later by its correlation id.
fn job(e: &mut Engine, q: &[(String, String)], description: String, takes: Duration) {
    let correlation_id = query(q, "correlation_id").map_or_else(uuid, str::to_owned);
    let id = uuid();
    e.jobs.insert(
        id.clone(),
        Job {
            id,
            description,
            correlation_id,
            status: Stages::progress("started", &[(takes, "finished")]),
            start: now_iso(),
        },
    );
}

fn add_vm(shared: &Shared, q: &[(String, String)], body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let name = doc
        .text_at(&["name"])
        .ok_or_else(|| bad("VM [name] required for add"))?
        .to_owned();
    if doc.at(&["cluster"]).is_none() {
        return Err(bad("VM [cluster.id|name] required for add"));
    }
    let latency = shared.options.latency.clone();
    let mut e = shared.lock();
    if e.vms.values().any(|v| v.name == name) {
        return Err(conflict(
            "Cannot add VM. The VM name is already in use, please choose a unique name and try again.",
        ));
    }
    let id = uuid();
    let mut vm = Vm {
        id: id.clone(),
        name: name.clone(),
        description: doc.text_at(&["description"]).unwrap_or_default().to_owned(),
        memory: doc
            .text_at(&["memory"])
            .and_then(|m| m.parse().ok())
            .unwrap_or(1 << 30),
        sockets: doc
            .text_at(&["cpu", "topology", "sockets"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
        bios: doc
            .text_at(&["bios", "type"])
            .unwrap_or("q35_sea_bios")
            .to_owned(),
        status: Stages::now("down"),
        disks: Vec::new(),
        nics: Vec::new(),
        tags: Vec::new(),
        created: now_iso(),
    };
    // Cloned from a snapshot: its disks copied into new disks, the VM
    // image_locked until the copies are done.
    if let Some(snapshot) = doc.id_at(&["snapshots", "snapshot"]) {
        let s = e
            .snapshots
            .get(snapshot)
            .cloned()
            .ok_or_else(|| not_found(snapshot))?;
        if s.status.current() != "ok" {
            return Err(conflict("Cannot add VM. The snapshot is locked."));
        }
        for (i, (disk, image)) in s.images.iter().enumerate() {
            let size = e.disks.get(disk).map_or(0, |d| d.size);
            let new = uuid();
            shared
                .disks
                .copy(&e.images[image], &disk_image(&new))
                .map_err(|err| {
                    fault(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Operation Failed",
                        &err.to_string(),
                    )
                })?;
            e.disks.insert(
                new.clone(),
                Disk {
                    id: new.clone(),
                    alias: format!("{name}_Disk{}", i + 1),
                    size,
                    status: Stages::progress("locked", &[(latency.clone_disks, "ok")]),
                    description: String::new(),
                    format: "cow".into(),
                    incremental: true,
                },
            );
            vm.disks.push((new, i == 0));
        }
        vm.status = Stages::progress("image_locked", &[(latency.clone_disks, "down")]);
        job(
            &mut e,
            q,
            format!("Creating VM {name} from Snapshot"),
            latency.clone_disks,
        );
    }
    let doc = e.render_vm(&vm);
    e.vms.insert(id, vm);
    created(&doc)
}

/// Whether boolean query parameter `key` is `true`, else `default`.
fn flag(q: &[(String, String)], key: &str, default: bool) -> Result<bool, Response> {
    match query(q, key) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(bad(&format!(
            "Invalid value '{other}' for boolean parameter '{key}'"
        ))),
    }
}

/// `DELETE /vms/{id}`: the VM and, unless `detach_only=true`, its disks.
fn remove_vm(shared: &Shared, id: &str, q: &[(String, String)]) -> Answer {
    let detach_only = flag(q, "detach_only", false)?;
    let mut e = shared.lock();
    let vm = e.vms.get(id).ok_or_else(|| not_found(id))?;
    if vm.status.current() != "down" {
        return Err(conflict("Cannot remove VM. VM is running."));
    }
    let vm = e.vms.remove(id).ok_or_else(|| not_found(id))?;
    if !detach_only {
        for (disk, _) in vm.disks {
            e.disks.remove(&disk);
            let _ = shared.disks.remove(&disk_image(&disk));
        }
    }
    let snaps: Vec<String> = e
        .snapshots
        .values()
        .filter(|s| s.vm == id)
        .map(|s| s.id.clone())
        .collect();
    for s in snaps {
        if let Some(s) = e.snapshots.remove(&s) {
            for (_, image) in s.images {
                if let Some(file) = e.images.remove(&image) {
                    let _ = shared.disks.remove(&file);
                }
            }
        }
    }
    Ok(StatusCode::OK.into_response())
}

fn power(shared: &Shared, id: &str, action: &str) -> Answer {
    let latency = shared.options.latency.vm_power;
    let mut e = shared.lock();
    let vm = e.vms.get_mut(id).ok_or_else(|| not_found(id))?;
    let status = vm.status.current();
    match action {
        "start" => match status {
            "down" => {
                vm.status = Stages::progress(
                    "wait_for_launch",
                    &[(latency / 3, "powering_up"), (latency, "up")],
                );
            }
            "up" | "powering_up" | "wait_for_launch" => {
                return Err(conflict("Cannot run VM. VM is running."));
            }
            other => return Err(conflict(&format!("Cannot run VM. VM status is {other}."))),
        },
        _ => match status {
            "down" => {
                return Err(conflict("Cannot stop VM. VM is not running."));
            }
            "image_locked" => {
                return Err(conflict("Cannot stop VM. VM is being created."));
            }
            _ => vm.status = Stages::progress("powering_down", &[(latency, "down")]),
        },
    }
    action_done()
}

fn attach(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let disk = doc
        .id_at(&["disk"])
        .ok_or_else(|| bad("DiskAttachment [disk.id] required for add"))?
        .to_owned();
    let bootable = doc.text_at(&["bootable"]) == Some("true");
    let mut e = shared.lock();
    let status = e
        .disks
        .get(&disk)
        .map(|d| d.status.current())
        .ok_or_else(|| not_found(&disk))?;
    if status != "ok" {
        return Err(conflict(&format!(
            "Cannot attach Virtual Disk. Disk {disk} status is {status}."
        )));
    }
    if e.vms
        .values()
        .any(|v| v.disks.iter().any(|(d, _)| *d == disk))
    {
        return Err(conflict(
            "Cannot attach Virtual Disk. The disk is already attached to a VM.",
        ));
    }
    let vm = e.vms.get_mut(id).ok_or_else(|| not_found(id))?;
    vm.disks.push((disk.clone(), bootable));
    created(&e.render_attachment(id, &disk, bootable))
}

/// `DELETE /vms/{id}/diskattachments/{disk}`: the disk detached (the
/// attachment's id is the disk's), and removed too with `detach_only=false`
/// (the default is `true`). Refused while the VM runs, as the engine
/// refuses detaching a plugged disk.
fn detach(shared: &Shared, id: &str, disk: &str, q: &[(String, String)]) -> Answer {
    let detach_only = flag(q, "detach_only", true)?;
    let mut e = shared.lock();
    let vm = e.vms.get_mut(id).ok_or_else(|| not_found(id))?;
    let at = vm
        .disks
        .iter()
        .position(|(d, _)| d == disk)
        .ok_or_else(|| not_found(disk))?;
    if vm.status.current() != "down" {
        return Err(conflict(
            "Cannot detach Virtual Disk. The disk is plugged into a running VM; deactivate it \
             or stop the VM first.",
        ));
    }
    vm.disks.remove(at);
    if !detach_only {
        e.disks.remove(disk);
        let _ = shared.disks.remove(&disk_image(disk));
    }
    Ok(StatusCode::OK.into_response())
}

fn add_nic(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let name = doc
        .text_at(&["name"])
        .ok_or_else(|| bad("NIC [name] required for add"))?
        .to_owned();
    let profile = doc
        .id_at(&["vnic_profile"])
        .ok_or_else(|| bad("NIC [vnic_profile.id] required for add"))?
        .to_owned();
    let mut e = shared.lock();
    if e.network_by_profile(&profile).is_none() {
        return Err(not_found(&profile));
    }
    let vm = e.vms.get_mut(id).ok_or_else(|| not_found(id))?;
    if vm.nics.iter().any(|n| n.name == name) {
        return Err(conflict(
            "Cannot add Interface. The VM Network Interface name is already in use.",
        ));
    }
    let nic = Nic {
        id: uuid(),
        name,
        profile,
        mac: doc
            .text_at(&["mac", "address"])
            .map_or_else(mac, str::to_owned),
    };
    vm.nics.push(nic.clone());
    created(&e.render_nic(id, &nic))
}

/// Tags are global in the engine and assigned by name; their id here is
/// derived from the name.
fn tag_id_of(name: &str) -> String {
    use sha2::Digest as _;
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&sha2::Sha256::digest(name.as_bytes())[..16]);
    uuid::Uuid::from_bytes(bytes).to_string()
}

fn tag(name: &str) -> Element {
    let id = tag_id_of(name);
    linked("tag", &format!("tags/{id}"), &id).with_text("name", name)
}

fn add_tag(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let name = doc
        .text_at(&["name"])
        .ok_or_else(|| bad("Tag [name] required for add"))?
        .to_owned();
    let mut e = shared.lock();
    let vm = e.vms.get_mut(id).ok_or_else(|| not_found(id))?;
    if !vm.tags.contains(&name) {
        vm.tags.push(name.clone());
    }
    created(&tag(&name))
}

fn add_snapshot(shared: &Shared, id: &str, q: &[(String, String)], body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let latency = shared.options.latency.snapshot;
    let mut e = shared.lock();
    let vm = e.vms.get(id).cloned().ok_or_else(|| not_found(id))?;
    if e.snapshots
        .values()
        .any(|s| s.vm == id && s.status.current() == "locked")
    {
        return Err(conflict(
            "Cannot create Snapshot. Snapshot is currently being created for VM.",
        ));
    }
    let sid = uuid();
    // The copy is taken now (the data at this instant); the snapshot shows
    // `locked` until the engine would have finished.
    let mut images = Vec::new();
    for (disk, _) in &vm.disks {
        let image = uuid();
        let file = format!("image-{image}");
        shared.disks.copy(&disk_image(disk), &file).map_err(|err| {
            fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Operation Failed",
                &err.to_string(),
            )
        })?;
        e.images.insert(image.clone(), file);
        images.push((disk.clone(), image));
    }
    let s = Snapshot {
        id: sid.clone(),
        vm: id.to_owned(),
        description: doc.text_at(&["description"]).unwrap_or_default().to_owned(),
        status: Stages::progress("locked", &[(latency, "ok")]),
        date: now_iso(),
        images,
    };
    job(
        &mut e,
        q,
        format!("Creating VM Snapshot {} for VM {}", s.description, vm.name),
        latency,
    );
    let doc = e.render_snapshot(&s);
    e.snapshots.insert(sid, s);
    created(&doc)
}

fn remove_snapshot(shared: &Shared, id: &str, sid: &str) -> Answer {
    let mut e = shared.lock();
    let s = e
        .snapshots
        .get(sid)
        .filter(|s| s.vm == id)
        .ok_or_else(|| not_found(sid))?;
    if s.status.current() != "ok" {
        return Err(conflict(
            "Cannot remove Snapshot. Snapshot is currently being created.",
        ));
    }
    let images: Vec<String> = s.images.iter().map(|(_, i)| i.clone()).collect();
    if e.transfers.values().any(|t| {
        t.phase.current() == "transferring"
            && images
                .iter()
                .any(|i| t.source == Source::Snapshot(i.clone()))
    }) {
        return Err(conflict(
            "Cannot remove Snapshot. A disk of the snapshot is being transferred.",
        ));
    }
    e.snapshots.remove(sid);
    for image in images {
        if let Some(file) = e.images.remove(&image) {
            let _ = shared.disks.remove(&file);
        }
    }
    Ok(StatusCode::OK.into_response())
}

fn add_disk(shared: &Shared, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let size: u64 = doc
        .text_at(&["provisioned_size"])
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| bad("Disk [provisioned_size] required for add"))?;
    let alias = doc
        .text_at(&["name"])
        .or_else(|| doc.text_at(&["alias"]))
        .unwrap_or("disk")
        .to_owned();
    if doc.at(&["storage_domains", "storage_domain"]).is_none() {
        return Err(bad(
            "Disk [storage_domains.storage_domain.id|name] required for add",
        ));
    }
    let format = doc.text_at(&["format"]).unwrap_or("raw").to_owned();
    if !matches!(format.as_str(), "raw" | "cow") {
        return Err(bad(&format!(
            "Invalid value for disk format: {format} (raw or cow)"
        )));
    }
    let incremental = match doc.text_at(&["backup"]).unwrap_or("none") {
        "none" => false,
        "incremental" if format == "cow" => true,
        "incremental" => {
            return Err(bad(
                "Cannot add Virtual Disk. Incremental backup requires the disk format to be COW (qcow2).",
            ));
        }
        other => return Err(bad(&format!("Invalid value for disk backup: {other}"))),
    };
    let id = uuid();
    shared.disks.create(&disk_image(&id), size).map_err(|err| {
        fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Operation Failed",
            &err.to_string(),
        )
    })?;
    let disk = Disk {
        id: id.clone(),
        alias,
        size,
        status: Stages::progress("locked", &[(shared.options.latency.clone_disks, "ok")]),
        description: doc.text_at(&["description"]).unwrap_or_default().to_owned(),
        format,
        incremental,
    };
    let mut e = shared.lock();
    let doc = e.render_disk(&disk, 0);
    e.disks.insert(id, disk);
    created(&doc)
}

/// `POST /disks/{id}/copy`: a new disk on the storage domain holding the
/// disk's data as it is now, named by the action's `<disk><name>`; locked
/// while the copy runs, like a new disk. Refused while the disk is locked
/// or its VM runs.
fn copy_disk(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let mut e = shared.lock();
    let source = e.disks.get(id).cloned().ok_or_else(|| not_found(id))?;
    if source.status.current() != "ok" {
        return Err(conflict(&format!(
            "Cannot copy Virtual Disk. Disk {} status is {}.",
            source.alias,
            source.status.current()
        )));
    }
    if let Some(vm) = e
        .vms
        .values()
        .find(|v| v.status.current() != "down" && v.disks.iter().any(|(d, _)| d == id))
    {
        return Err(conflict(&format!(
            "Cannot copy Virtual Disk. VM {} must be down.",
            vm.name
        )));
    }
    match doc.id_at(&["storage_domain"]) {
        Some(sd) if sd == e.storage_domain => {}
        Some(sd) => return Err(not_found(sd)),
        None => return Err(bad("Action [storage_domain.id|name] required for copy")),
    }
    let alias = doc
        .text_at(&["disk", "name"])
        .or_else(|| doc.text_at(&["disk", "alias"]))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}_copy", source.alias));
    let new = uuid();
    shared
        .disks
        .copy(&disk_image(id), &disk_image(&new))
        .map_err(|err| {
            fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Operation Failed",
                &err.to_string(),
            )
        })?;
    let status = Stages::progress("locked", &[(shared.options.latency.clone_disks, "ok")]);
    e.disks.insert(
        new.clone(),
        Disk {
            id: new,
            alias,
            size: source.size,
            status,
            description: source.description.clone(),
            format: source.format.clone(),
            incremental: source.incremental,
        },
    );
    action_done()
}

fn remove_disk(shared: &Shared, id: &str) -> Answer {
    let mut e = shared.lock();
    if !e.disks.contains_key(id) {
        return Err(not_found(id));
    }
    if e.vms.values().any(|v| v.disks.iter().any(|(d, _)| d == id)) {
        return Err(conflict(
            "Cannot remove Virtual Disk. The disk is attached to a VM.",
        ));
    }
    if e.transfers
        .values()
        .any(|t| t.disk == id && t.phase.current() == "transferring")
    {
        return Err(conflict(
            "Cannot remove Virtual Disk. The disk is being transferred.",
        ));
    }
    e.disks.remove(id);
    let _ = shared.disks.remove(&disk_image(id));
    Ok(StatusCode::OK.into_response())
}

fn add_backup(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let latency = shared.options.latency.backup;
    let mut e = shared.lock();
    let vm = e.vms.get(id).cloned().ok_or_else(|| not_found(id))?;
    if e.backups
        .values()
        .any(|b| b.vm == id && !matches!(b.phase.current(), "succeeded" | "failed"))
    {
        return Err(conflict(
            "Cannot backup VM. A backup is already in progress.",
        ));
    }
    let from = doc.text_at(&["from_checkpoint_id"]).map(str::to_owned);
    if let Some(from) = &from
        && e.checkpoints.get(from).is_none_or(|c| c.vm != id)
    {
        return Err(bad(&format!(
            "Checkpoint {from} does not exist for VM {}",
            vm.name
        )));
    }
    let wanted: Vec<String> = doc
        .at(&["disks"])
        .map(|d| {
            d.all("disk")
                .filter_map(|d| d.attr("id"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let disks: Vec<String> = if wanted.is_empty() {
        vm.disks.iter().map(|(d, _)| d.clone()).collect()
    } else {
        wanted
    };
    let bid = uuid();
    let checkpoint = uuid();
    // The backup's point-in-time images; the new checkpoint starts an
    // empty dirty bitmap per disk, which every later write marks.
    for disk in &disks {
        if !vm.disks.iter().any(|(d, _)| d == disk) {
            return Err(bad(&format!(
                "Disk {disk} is not attached to VM {}",
                vm.name
            )));
        }
        if from.is_some() && !e.disks.get(disk).is_some_and(|d| d.incremental) {
            return Err(bad(&format!(
                "Cannot backup VM. Incremental backup is not enabled for disk {disk}."
            )));
        }
    }
    for disk in &disks {
        shared
            .disks
            .copy(&disk_image(disk), &format!("backup-{bid}-{disk}"))
            .map_err(|err| {
                fault(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Operation Failed",
                    &err.to_string(),
                )
            })?;
    }
    let dirty = match &from {
        Some(from) => {
            let c = &e.checkpoints[from];
            disks
                .iter()
                .map(|d| (d.clone(), c.dirty_ranges(d)))
                .collect()
        }
        None => BTreeMap::new(),
    };
    let parent = e
        .checkpoints
        .values()
        .filter(|c| c.vm == id)
        .max_by(|a, b| a.created.cmp(&b.created))
        .map(|c| c.id.clone());
    // Only disks with incremental backup enabled have bitmaps.
    let tracked = disks
        .iter()
        .filter(|d| e.disks.get(*d).is_some_and(|d| d.incremental))
        .map(|d| (d.clone(), BTreeSet::new()))
        .collect();
    e.checkpoints.insert(
        checkpoint.clone(),
        Checkpoint {
            id: checkpoint.clone(),
            vm: id.to_owned(),
            parent,
            created: now_iso(),
            written: tracked,
        },
    );
    let b = Backup {
        id: bid.clone(),
        vm: id.to_owned(),
        description: doc.text_at(&["description"]).map(str::to_owned),
        disks,
        from_checkpoint: from,
        to_checkpoint: checkpoint,
        dirty,
        phase: Stages::progress(
            "initializing",
            &[(latency / 2, "starting"), (latency, "ready")],
        ),
        created: now_iso(),
    };
    let doc = e.render_backup(&b);
    e.backups.insert(bid, b);
    created(&doc)
}

/// Only the root of a VM's checkpoint chain can go (its bitmaps with it),
/// and not while a backup from it runs; its child becomes the root.
fn remove_checkpoint(shared: &Shared, id: &str, cid: &str) -> Answer {
    let mut e = shared.lock();
    let c = e
        .checkpoints
        .get(cid)
        .filter(|c| c.vm == id)
        .ok_or_else(|| not_found(cid))?;
    if c.parent
        .as_ref()
        .is_some_and(|p| e.checkpoints.contains_key(p))
    {
        return Err(conflict(
            "Cannot remove VM checkpoint. Only the root checkpoint of the VM can be removed.",
        ));
    }
    let running = e.backups.values().any(|b| {
        b.from_checkpoint.as_deref() == Some(cid)
            && !matches!(b.phase.current(), "succeeded" | "failed")
    });
    if running {
        return Err(conflict(
            "Cannot remove VM checkpoint. A backup from it is in progress.",
        ));
    }
    e.checkpoints.remove(cid);
    for c in e.checkpoints.values_mut() {
        if c.parent.as_deref() == Some(cid) {
            c.parent = None;
        }
    }
    Ok(StatusCode::OK.into_response())
}

fn finalize_backup(shared: &Shared, id: &str, bid: &str) -> Answer {
    let latency = shared.options.latency.backup;
    let mut e = shared.lock();
    let b = e
        .backups
        .get_mut(bid)
        .filter(|b| b.vm == id)
        .ok_or_else(|| not_found(bid))?;
    match b.phase.current() {
        "ready" => {
            b.phase = Stages::progress("finalizing", &[(latency, "succeeded")]);
            action_done()
        }
        "finalizing" | "succeeded" => action_done(),
        other => Err(conflict(&format!(
            "Cannot finalize backup. The backup phase is {other}."
        ))),
    }
}

fn add_transfer(shared: &Shared, body: &[u8]) -> Answer {
    let doc = parse(body)?;
    let upload = match doc.text_at(&["direction"]).unwrap_or("upload") {
        "upload" => true,
        "download" => false,
        other => return Err(bad(&format!("Invalid direction '{other}'"))),
    };
    if doc.text_at(&["format"]).is_some_and(|f| f != "raw") {
        return Err(bad("The simulated imageio serves raw images only"));
    }
    let latency = shared.options.latency.transfer;
    let mut e = shared.lock();
    let (disk, source, image) = if let Some(snapshot) = doc.id_at(&["snapshot"]) {
        let file = e
            .images
            .get(snapshot)
            .cloned()
            .ok_or_else(|| not_found(snapshot))?;
        let disk = e
            .snapshots
            .values()
            .flat_map(|s| s.images.iter())
            .find(|(_, i)| i == snapshot)
            .map(|(d, _)| d.clone())
            .ok_or_else(|| not_found(snapshot))?;
        (disk, Source::Snapshot(snapshot.to_owned()), file)
    } else {
        let disk = doc
            .id_at(&["disk"])
            .or_else(|| doc.id_at(&["image"]))
            .ok_or_else(|| bad("ImageTransfer [disk.id|image.id|snapshot.id] required for add"))?
            .to_owned();
        if !e.disks.contains_key(&disk) {
            return Err(not_found(&disk));
        }
        match doc.id_at(&["backup"]) {
            Some(backup) => {
                let b = e.backups.get(backup).ok_or_else(|| not_found(backup))?;
                if b.phase.current() != "ready" {
                    return Err(conflict(&format!(
                        "Cannot transfer Virtual Disk. The backup phase is {}.",
                        b.phase.current()
                    )));
                }
                if !b.disks.contains(&disk) {
                    return Err(bad(&format!("Disk {disk} is not part of backup {backup}")));
                }
                (
                    disk.clone(),
                    Source::Backup(backup.to_owned()),
                    format!("backup-{backup}-{disk}"),
                )
            }
            None => {
                let attached_running = e.vms.values().any(|v| {
                    v.status.current() != "down" && v.disks.iter().any(|(d, _)| *d == disk)
                });
                if attached_running {
                    return Err(conflict(
                        "Cannot transfer Virtual Disk. The VM using the disk is running.",
                    ));
                }
                (disk.clone(), Source::Disk, disk_image(&disk))
            }
        }
    };
    if upload && source != Source::Disk {
        return Err(bad("An upload writes a disk, not a snapshot or backup"));
    }
    if e.transfers.values().any(|t| {
        t.disk == disk
            && t.upload
            && !t.phase.current().starts_with("finished")
            && !t.phase.current().starts_with("cancelled")
    }) {
        return Err(conflict(
            "Cannot transfer Virtual Disk. The disk is locked by another transfer.",
        ));
    }
    if upload && let Some(d) = e.disks.get_mut(&disk) {
        if d.status.current() != "ok" {
            return Err(conflict(&format!(
                "Cannot transfer Virtual Disk. Disk status is {}.",
                d.status.current()
            )));
        }
        d.status = Stages::now("locked");
    }
    let id = uuid();
    let t = Transfer {
        id: id.clone(),
        disk,
        source,
        upload,
        ticket: uuid(),
        phase: Stages::progress("initializing", &[(latency, "transferring")]),
        image,
        transferred: 0,
    };
    let doc = e.render_transfer(&t, &shared.base);
    e.transfers.insert(id, t);
    created(&doc)
}

fn end_transfer(shared: &Shared, id: &str, finalize: bool) -> Answer {
    let latency = shared.options.latency.transfer;
    let mut e = shared.lock();
    let t = e.transfers.get_mut(id).ok_or_else(|| not_found(id))?;
    let phase = t.phase.current();
    if phase.starts_with("finalizing")
        || phase.starts_with("finished")
        || phase.starts_with("cancelled")
    {
        return action_done();
    }
    t.phase = if finalize {
        Stages::progress("finalizing_success", &[(latency, "finished_success")])
    } else {
        Stages::progress("cancelled_user", &[(latency, "finished_failure")])
    };
    let (disk, upload) = (t.disk.clone(), t.upload);
    if upload && !finalize {
        // The engine removes a cancelled upload's partial image (at once
        // here; the real engine once the cancel is processed).
        e.disks.remove(&disk);
        let _ = shared.disks.remove(&disk_image(&disk));
    } else if upload && let Some(d) = e.disks.get_mut(&disk) {
        d.status = Stages::progress("locked", &[(latency, "ok")]);
    }
    action_done()
}

/// Used by `Shared`: the source of a backup transfer, for dirty extents.
pub(super) fn backup_of(e: &Engine, backup: &str) -> Option<Backup> {
    e.backups.get(backup).cloned()
}

pub(super) fn transfer_by_ticket(e: &Engine, ticket: &str) -> Option<Transfer> {
    e.transfers.values().find(|t| t.ticket == ticket).cloned()
}
