//! The mover appliance: what a server booted from the image named
//! [`IMAGE_NAME`] does once it is up, as its cloud-init would. OpenStack has
//! no ranged raw-volume API, so a plugin boots this appliance with the
//! volume to move attached; the appliance serves that volume with the data
//! mover's protocol (`rebound_datamover::agent`) and publishes where and how
//! to reach it in its server metadata:
//!
//! - `rebound:mover_url` — `http://ADDRESS:PORT/disk`;
//! - `rebound:mover_token` — the per-transfer bearer token.
//!
//! The appliance serves the first volume attached to it, writable when the
//! server was created with metadata `rebound:mover_mode` = `import`,
//! read-only otherwise. Deleting the server stops the agent. In the lab the
//! agent listens on loopback beside the simulator and serves the volume's
//! sparse file; a real appliance listens on its port's address.

use std::time::Duration;

use serde_json::json;

pub use crate::mover::IMAGE_NAME;

use super::state::{Api, Region, set, str_of};

pub(super) fn is_mover_image(r: &Region, image: &str) -> bool {
    r.images
        .get(image)
        .is_some_and(|i| str_of(i, "name") == IMAGE_NAME)
}
/// Bring appliance `server` up after the build latency: start its agent,
/// publish it, and turn the server `ACTIVE` (or `ERROR` with a fault when
/// the agent cannot start).
pub(super) fn boot(api: &Api, server: String, build: Duration) {
    let api = api.clone();
    tokio::spawn(async move {
        tokio::time::sleep(build).await;
        let plan = api.with(|r| {
            let s = r.servers.get(&server)?;
            let volume = s["os-extended-volumes:volumes_attached"][0]["id"]
                .as_str()?
                .to_owned();
            let writable = s["metadata"]["rebound:mover_mode"] == "import";
            Some((volume, writable))
        });
        let started = match plan {
            Some((volume, writable)) => start(&api, &volume, writable).await,
            None => Err(std::io::Error::other("no volume is attached to serve")),
        };
        api.with(|r| {
            let Some(s) = r.servers.get_mut(&server) else {
                return;
            };
            match started {
                Ok((url, token, agent)) => {
                    if let Some(metadata) = s["metadata"].as_object_mut() {
                        metadata.insert("rebound:mover_url".into(), json!(url));
                        metadata.insert("rebound:mover_token".into(), json!(token));
                    }
                    super::nova::activate(s);
                    r.agents.insert(server.clone(), agent);
                }
                Err(e) => {
                    set(s, "status", json!("ERROR"));
                    set(s, "OS-EXT-STS:vm_state", json!("error"));
                    set(s, "OS-EXT-STS:task_state", json!(null));
                    set(
                        s,
                        "fault",
                        json!({"code": 500, "message": format!("mover appliance failed: {e}")}),
                    );
                }
            }
        });
    });
}

async fn start(
    api: &Api,
    volume: &str,
    writable: bool,
) -> std::io::Result<(String, String, crate::mover::Agent)> {
    let path = api.shared.disks.path(&super::cinder::volume_file(volume))?;
    let token = crate::random_hex(24);
    let (url, agent) = crate::mover::start(
        path,
        writable,
        token.clone(),
        std::net::Ipv4Addr::LOCALHOST,
        "OpenStack",
    )
    .await?;
    Ok((url, token, agent))
}
