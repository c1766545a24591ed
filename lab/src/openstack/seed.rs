//! The seeded workload, so a fresh cloud has something to protect: in the
//! first region a web server and a database booted from volumes (with a
//! recognisable first block), on a private network, the web server behind a
//! floating IP, a DNS zone with its A record, and a load balancer pool with
//! the web server at weight 1 and a standby address at weight 0. Every
//! other region has the same networks (other ranges) and a spare floating
//! IP, ready to receive a failover. Every region has the mover appliance's
//! image (`rebound-mover`, see [`super::mover`]), as an operator would
//! upload it once per region.

use serde_json::json;

use super::state::{Api, Shared};
use super::{cinder, designate, glance, neutron, nova, octavia};

pub(super) fn workload(shared: &std::sync::Arc<Shared>) -> std::io::Result<()> {
    for (n, region) in shared.options.regions.iter().enumerate() {
        let api = Api {
            shared: shared.clone(),
            region: region.as_str().into(),
        };
        let volumes = api.with(|r| -> std::io::Result<Vec<(String, String)>> {
            let private =
                neutron::new_network(&api, r, "private", &format!("10.{n}.0.0/24"), false);
            let public =
                neutron::new_network(&api, r, "public", &format!("172.24.{}.0/24", 4 + n), true);
            if n > 0 {
                neutron::new_fip(&api, r, &public, None);
                designate::new_zone(&api, r, "example.org.");
                return Ok(Vec::new());
            }
            let mut volumes = Vec::new();
            let mut web_ip = String::new();
            let mut web_fip = String::new();
            for (name, flavor, gib) in [("web-1", "2", 1u64), ("db-1", "3", 2)] {
                let server = crate::openstack::state::uuid();
                let volume = crate::openstack::state::uuid();
                let mut doc =
                    cinder::volume_doc(&api, &volume, &format!("{name}-root"), gib, "available");
                doc["bootable"] = json!("true");
                cinder::attach(&mut doc, &server);
                r.volumes.insert(volume.clone(), doc);
                let mut server_doc =
                    nova::server_doc(&api, &server, name, flavor, std::slice::from_ref(&volume));
                nova::activate(&mut server_doc);
                r.servers.insert(server.clone(), server_doc);
                let port = neutron::new_port(&api, r, &private, &server, None).unwrap_or_default();
                if name == "web-1" {
                    web_fip = neutron::new_fip(&api, r, &public, Some(&port))
                        .and_then(|f| r.floatingips.get(&f))
                        .map(|f| {
                            f["floating_ip_address"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned()
                        })
                        .unwrap_or_default();
                    web_ip = r
                        .ports
                        .get(&port)
                        .and_then(|p| p["fixed_ips"][0]["ip_address"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                }
                volumes.push((volume, format!("{name} boot disk")));
            }
            let zone = designate::new_zone(&api, r, "example.org.");
            designate::new_recordset(
                &api,
                r,
                &zone,
                "www.example.org.",
                "A",
                vec![web_fip],
                Some(300),
            );
            let subnet = r
                .networks
                .get(&private)
                .and_then(|n| n["subnets"][0].as_str())
                .unwrap_or_default()
                .to_owned();
            let (_, pool) =
                octavia::new_load_balancer(&api, r, "web-lb", &format!("10.{n}.0.100"), &subnet);
            octavia::new_member(&api, r, &pool, "web-1", &web_ip, 80, 1);
            octavia::new_member(&api, r, &pool, "web-1-standby", "10.1.0.10", 80, 0);
            Ok(volumes)
        })?;
        mover_image(&api)?;
        for (volume, marker) in volumes {
            let file = cinder::volume_file(&volume);
            let gib = api
                .with(|r| r.volumes.get(&volume).and_then(|v| v["size"].as_u64()))
                .unwrap_or(1);
            shared.disks.create(&file, api.disk_bytes(gib))?;
            shared.disks.write(&file, 0, marker.as_bytes())?;
        }
    }
    Ok(())
}

/// The mover appliance's image, `active`, with a token of image data.
fn mover_image(api: &Api) -> std::io::Result<()> {
    let id = crate::openstack::state::uuid();
    let file = glance::image_file(&id);
    let data = b"rebound mover appliance (simulated)";
    api.shared.disks.create(&file, data.len() as u64)?;
    api.shared.disks.write(&file, 0, data)?;
    let hashes = glance::hashes(&api.shared.disks, &file)?;
    let mut doc = glance::image_doc(api, &id, super::mover::IMAGE_NAME, "qcow2", "bare");
    glance::activate(&mut doc, &hashes);
    doc["visibility"] = json!("public");
    api.with(|r| r.images.insert(id, doc));
    Ok(())
}

/// A running server named `name` of `flavor` in `region`, booting from new
/// volumes of the given sizes in GiB (the first bootable), on the region's
/// `private` network: `(server id, volume ids)`.
pub(super) fn server(
    shared: &std::sync::Arc<Shared>,
    region: &str,
    name: &str,
    flavor: &str,
    gibs: &[u64],
) -> std::io::Result<(String, Vec<String>)> {
    let api = Api {
        shared: shared.clone(),
        region: region.into(),
    };
    let server = crate::openstack::state::uuid();
    let volumes: Vec<String> = gibs
        .iter()
        .map(|_| crate::openstack::state::uuid())
        .collect();
    let placed = api.with(|r| {
        let private = r
            .networks
            .values()
            .find(|n| n["name"] == "private")
            .and_then(|n| n["id"].as_str())
            .map(str::to_owned)?;
        for (i, (volume, gib)) in volumes.iter().zip(gibs).enumerate() {
            let mut doc =
                cinder::volume_doc(&api, volume, &format!("{name}-vol{i}"), *gib, "available");
            if i == 0 {
                doc["bootable"] = json!("true");
            }
            cinder::attach(&mut doc, &server);
            r.volumes.insert(volume.clone(), doc);
        }
        let mut doc = nova::server_doc(&api, &server, name, flavor, &volumes);
        nova::activate(&mut doc);
        r.servers.insert(server.clone(), doc);
        neutron::new_port(&api, r, &private, &server, None)
    });
    if placed.is_none() {
        return Err(std::io::Error::other(format!(
            "region '{region}' has no private network"
        )));
    }
    for (volume, gib) in volumes.iter().zip(gibs) {
        shared
            .disks
            .create(&cinder::volume_file(volume), api.disk_bytes(*gib))?;
    }
    Ok((server, volumes))
}
