//! The mover appliance: what a server booted from the image named
//! [`IMAGE_NAME`] does once it is up, as its cloud-init would. OpenStack has
//! no ranged raw-volume API, so a plugin boots this appliance with the
//! volume to move attached; the appliance serves that volume with the data
//! mover's protocol (`rebound_datamover::agent`) behind the bearer token its
//! user data sets (`REBOUND_MOVER_TOKEN=…`: the plugin derives it, so it is
//! kept in no metadata), and publishes where to reach it in its server
//! metadata as `rebound:mover_url` (`http://ADDRESS:PORT/disk`). Without a
//! token the appliance fails: the server goes to `ERROR` with a fault.
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
            let token = crate::mover::token_in(s["OS-EXT-SRV-ATTR:user_data"].as_str());
            Some((volume, writable, token))
        });
        let started = match plan {
            Some((volume, writable, Ok(token))) => start(&api, &volume, writable, token).await,
            Some((_, _, Err(e))) => Err(std::io::Error::other(e)),
            None => Err(std::io::Error::other("no volume is attached to serve")),
        };
        api.with(|r| {
            // Gone or going: its agent stops with it (dropped here).
            let Some(s) = r
                .servers
                .get_mut(&server)
                .filter(|s| !super::nova::deleting(s))
            else {
                return;
            };
            match started {
                Ok((url, agent)) => {
                    if let Some(metadata) = s["metadata"].as_object_mut() {
                        metadata.insert("rebound:mover_url".into(), json!(url));
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
    token: String,
) -> std::io::Result<(String, crate::mover::Agent)> {
    let path = api.shared.disks.path(&super::cinder::volume_file(volume))?;
    crate::mover::start(
        path,
        writable,
        token,
        std::net::Ipv4Addr::LOCALHOST,
        "OpenStack",
    )
    .await
}
