//! The OpenStack simulator over plain HTTP, for what the openstacksdk
//! fidelity check does not reach: token and microversion refusals, the
//! faults API, backups moved between regions, Glance data and imports,
//! Octavia member weights.

use std::time::Duration;

use rebound_lab::openstack::{Faults, Latencies};
use rebound_lab::{OpenStackOptions, OpenStackSite};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn site() -> OpenStackSite {
    let ms = Duration::from_millis;
    OpenStackSite::start(OpenStackOptions {
        gib: 1 << 20,
        // Long enough that a transitional state is seen on a loaded
        // machine, short enough to keep the suite quick.
        latency: Latencies {
            server_build: ms(300),
            volume: ms(300),
            snapshot: ms(300),
            backup: ms(300),
            image: ms(300),
            dns: ms(300),
            load_balancer: ms(300),
        },
        ..OpenStackOptions::default()
    })
    .await
    .expect("start the OpenStack simulator")
}

/// A client holding a project-scoped token.
struct Cloud {
    http: reqwest::Client,
    base: String,
    project: String,
    token: String,
}

impl Cloud {
    async fn login(site: &OpenStackSite) -> Self {
        let http = reqwest::Client::new();
        let options = site.options();
        let response = http
            .post(format!("{}/auth/tokens", site.auth_url()))
            .json(&password_auth(
                &options.user,
                &options.password,
                &options.project,
            ))
            .send()
            .await
            .expect("POST /v3/auth/tokens");
        assert_eq!(response.status(), StatusCode::CREATED);
        let token = response.headers()["x-subject-token"]
            .to_str()
            .expect("token header")
            .to_owned();
        Self {
            http,
            base: site.endpoint(),
            project: site.project_id().to_owned(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.replace("{p}", &self.project))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_at(None, method, path, body).await
    }

    /// A call at a microversion (`"volume 3.14"`).
    async fn call_at(
        &self,
        version: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("x-auth-token", &self.token);
        if let Some(version) = version {
            request = request.header("openstack-api-version", version);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Poll `path` until the JSON at `pointer` is `want`.
    async fn wait_for(&self, path: &str, pointer: &str, want: &str) -> Value {
        self.wait_for_at(None, path, pointer, want).await
    }

    /// Poll `path` at a microversion until the JSON at `pointer` is `want`.
    async fn wait_for_at(
        &self,
        version: Option<&str>,
        path: &str,
        pointer: &str,
        want: &str,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (status, body) = self.call_at(version, "GET", path, None).await;
            assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
            if body.pointer(pointer) == Some(&json!(want)) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{path} never had {pointer} = {want}: {last}");
    }
}

fn password_auth(user: &str, password: &str, project: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password
        }}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}
    }})
}

fn id(doc: &Value) -> String {
    doc["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn calls_need_a_token_and_auth_returns_the_catalog_of_every_region() {
    let site = site().await;
    let http = reqwest::Client::new();
    let servers = format!("{}/RegionOne/compute/v2.1/servers", site.endpoint());
    let response = http.get(&servers).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = http
        .get(&servers)
        .header("x-auth-token", "not-a-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let wrong = password_auth(&site.options().user, "wrong", &site.options().project);
    let response = http
        .post(format!("{}/auth/tokens", site.auth_url()))
        .json(&wrong)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let options = site.options();
    let body: Value = http
        .post(format!("{}/auth/tokens", site.auth_url()))
        .json(&password_auth(
            &options.user,
            &options.password,
            &options.project,
        ))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("token body");
    let catalog = body["token"]["catalog"].as_array().expect("catalog");
    let volume = catalog
        .iter()
        .find(|s| s["type"] == "block-storage")
        .expect("block-storage in the catalog");
    let urls: Vec<&str> = volume["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["interface"] == "public")
        .map(|e| e["url"].as_str().expect("url"))
        .collect();
    let base = site.endpoint();
    let project = site.project_id();
    assert_eq!(
        urls,
        [
            format!("{base}/RegionOne/volume/v3/{project}"),
            format!("{base}/RegionTwo/volume/v3/{project}")
        ]
    );
    assert_eq!(body["token"]["project"]["id"], project);

    // Version discovery answers without a token, as the real services do.
    let response = http
        .get(format!("{base}/RegionTwo/volume/"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::MULTIPLE_CHOICES);
    let versions: Value = response.json().await.expect("versions");
    assert_eq!(versions["versions"][0]["version"], "3.71");
}

#[tokio::test]
async fn microversions_are_negotiated_and_out_of_range_ones_refused() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let url = cloud.url("/RegionOne/compute/v2.1/servers");
    let ask = |version: &'static str| {
        cloud
            .http
            .get(&url)
            .header("x-auth-token", &cloud.token)
            .header("openstack-api-version", version)
            .send()
    };
    let response = ask("compute 2.79").await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["openstack-api-version"], "compute 2.79");
    let response = ask("compute latest").await.expect("GET");
    assert_eq!(response.headers()["openstack-api-version"], "compute 2.96");
    let response = ask("compute 2.100").await.expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body: Value = response.json().await.expect("fault");
    assert!(
        body["computeFault"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum is 2.96")),
        "{body}"
    );
}

#[tokio::test]
async fn faults_are_scripted_through_the_lab_endpoint() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let set = |faults: Value| {
        cloud
            .http
            .post(format!("{}/_lab/faults", cloud.base))
            .json(&faults)
            .send()
    };
    let servers = "/RegionOne/compute/v2.1/servers";
    let volumes = "/RegionOne/volume/v3/{p}/volumes";

    let response = set(json!({"error_rate": 1.0, "status": 429, "retry_after": 7}))
        .await
        .expect("POST faults");
    assert_eq!(response.status(), StatusCode::OK);
    let response = cloud
        .http
        .get(cloud.url(servers))
        .header("x-auth-token", &cloud.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");

    set(json!({"down": true, "service": "volume"}))
        .await
        .expect("POST faults");
    assert_eq!(cloud.call("GET", servers, None).await.0, StatusCode::OK);
    assert_eq!(
        cloud.call("GET", volumes, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    set(json!({"hang": true})).await.expect("POST faults");
    let hung = tokio::time::timeout(Duration::from_millis(300), cloud.call("GET", servers, None));
    assert!(hung.await.is_err(), "a hung site answered");
    let pending = tokio::spawn({
        let http = cloud.http.clone();
        let (url, token) = (cloud.url(servers), cloud.token.clone());
        async move {
            let response = http.get(url).header("x-auth-token", token).send().await;
            response.map(|r| r.status())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    site.set_faults(Faults::default());
    assert_eq!(pending.await.expect("join").expect("GET"), StatusCode::OK);

    let response = set(json!({"error_rate": 2.0})).await.expect("POST faults");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    site.set_down(true);
    assert_eq!(
        cloud.call("GET", servers, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// The seeded web server's boot volume in RegionOne.
async fn web_volume(cloud: &Cloud) -> Value {
    let volumes = cloud.get("/RegionOne/volume/v3/{p}/volumes/detail").await;
    volumes["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "web-1-root")
        .cloned()
        .expect("the seeded web-1-root volume")
}

#[tokio::test]
async fn a_backup_exported_in_one_region_restores_in_another() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let volume = web_volume(&cloud).await;

    let (status, created) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/backups",
            Some(json!({"backup": {"volume_id": volume["id"], "name": "nightly", "force": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let backup = id(&created["backup"]);
    let path = format!("/RegionOne/volume/v3/{{p}}/backups/{backup}");
    assert_eq!(cloud.get(&path).await["backup"]["status"], "creating");
    cloud.wait_for(&path, "/backup/status", "available").await;
    let in_use = cloud
        .get(&format!(
            "/RegionOne/volume/v3/{{p}}/volumes/{}",
            id(&volume)
        ))
        .await;
    assert_eq!(in_use["volume"]["status"], "in-use", "back from backing-up");

    let (status, incremental) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/backups",
            Some(
                json!({"backup": {"volume_id": volume["id"], "incremental": true, "force": true}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{incremental}");

    let record = cloud.get(&format!("{path}/export_record")).await;
    let record = &record["backup-record"];
    assert_eq!(
        record["backup_service"],
        "cinder.backup.drivers.swift.SwiftBackupDriver"
    );
    let (status, imported) = cloud
        .call(
            "POST",
            "/RegionTwo/volume/v3/{p}/backups/import_record",
            Some(json!({"backup-record": record})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(imported["backup"]["id"], backup.as_str());
    let imported_path = format!("/RegionTwo/volume/v3/{{p}}/backups/{backup}");
    cloud
        .wait_for(&imported_path, "/backup/status", "available")
        .await;

    let (status, restore) = cloud
        .call(
            "POST",
            &format!("{imported_path}/restore"),
            Some(json!({"restore": {"name": "web-1-root-dr"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{restore}");
    let restored = restore["restore"]["volume_id"].as_str().expect("volume_id");
    let restored_path = format!("/RegionTwo/volume/v3/{{p}}/volumes/{restored}");
    assert_eq!(
        cloud.get(&restored_path).await["volume"]["status"],
        "restoring-backup"
    );
    let done = cloud
        .wait_for(&restored_path, "/volume/status", "available")
        .await;
    assert_eq!(done["volume"]["name"], "web-1-root-dr");
    assert_eq!(done["volume"]["size"], volume["size"]);
    let data = site
        .disks()
        .read_at(&format!("volume-{restored}"), 0, 15)
        .expect("restored blocks");
    assert_eq!(data, b"web-1 boot disk");
    assert_eq!(
        site.disks()
            .size(&format!("volume-{restored}"))
            .expect("size"),
        1 << 20
    );
    let posts = site.effects()[&format!("POST /RegionOne/volume/v3/{}/backups", site.project_id())];
    assert_eq!(posts, 2);
}

/// A server deleted while it builds never becomes ACTIVE (Nova aborts the
/// build): it stays `deleting` until it is gone. Here the mover appliance's
/// image, whose boot would otherwise end ACTIVE or in ERROR.
#[tokio::test]
async fn a_server_deleted_while_it_builds_never_comes_up() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let images = cloud.get("/RegionOne/image/v2/images").await;
    let image = images["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == "rebound-mover")
        .map(id)
        .expect("the mover image");
    let (status, server) = cloud
        .call(
            "POST",
            "/RegionOne/compute/v2.1/servers",
            Some(json!({"server": {"name": "doomed", "flavorRef": "2", "imageRef": image, "networks": "none"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{server}");
    let path = format!("/RegionOne/compute/v2.1/servers/{}", id(&server["server"]));
    // Half-way through its build (300 ms), so the build ends before the
    // deletion (300 ms more) does.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        cloud.call("DELETE", &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    for _ in 0..100 {
        let (status, body) = cloud.call("GET", &path, None).await;
        if status == StatusCode::NOT_FOUND {
            return;
        }
        assert_eq!(
            (
                body["server"]["status"].as_str(),
                body["server"]["OS-EXT-STS:task_state"].as_str()
            ),
            (Some("BUILD"), Some("deleting")),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} was never deleted");
}

#[tokio::test]
async fn a_snapshot_becomes_a_volume_a_server_boots_from() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let volume = web_volume(&cloud).await;
    let (status, snap) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/snapshots",
            Some(json!({"snapshot": {"volume_id": volume["id"], "name": "s"}})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "in-use needs force: {snap}"
    );
    let (_, snap) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/snapshots",
            Some(json!({"snapshot": {"volume_id": volume["id"], "name": "s", "force": true}})),
        )
        .await;
    let snap = id(&snap["snapshot"]);
    cloud
        .wait_for(
            &format!("/RegionOne/volume/v3/{{p}}/snapshots/{snap}"),
            "/snapshot/status",
            "available",
        )
        .await;
    let (status, created) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/volumes",
            Some(json!({"volume": {"snapshot_id": snap, "name": "clone", "size": 3}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["volume"]["status"], "creating");
    let clone = id(&created["volume"]);
    cloud
        .wait_for(
            &format!("/RegionOne/volume/v3/{{p}}/volumes/{clone}"),
            "/volume/status",
            "available",
        )
        .await;
    let disks = site.disks();
    assert_eq!(
        disks
            .read_at(&format!("volume-{clone}"), 0, 15)
            .expect("read"),
        b"web-1 boot disk"
    );
    assert_eq!(
        disks.size(&format!("volume-{clone}")).expect("size"),
        3 << 20
    );

    let networks = cloud
        .get("/RegionOne/network/v2.0/networks?name=private")
        .await;
    let net = id(&networks["networks"][0]);
    let (status, server) = cloud
        .call(
            "POST",
            "/RegionOne/compute/v2.1/servers",
            Some(json!({"server": {
                "name": "web-1-clone", "flavorRef": "2", "networks": [{"uuid": net}],
                "block_device_mapping_v2": [{"boot_index": 0, "uuid": clone, "source_type": "volume", "destination_type": "volume"}]
            }})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{server}");
    let server = id(&server["server"]);
    let path = format!("/RegionOne/compute/v2.1/servers/{server}");
    assert_eq!(cloud.get(&path).await["server"]["status"], "BUILD");
    let active = cloud.wait_for(&path, "/server/status", "ACTIVE").await;
    assert_eq!(
        active["server"]["os-extended-volumes:volumes_attached"][0]["id"],
        clone.as_str()
    );
    assert_eq!(
        active["server"]["addresses"]["private"][0]["OS-EXT-IPS:type"],
        "fixed"
    );
    let (status, _) = cloud
        .call(
            "POST",
            &format!("{path}/action"),
            Some(json!({"os-stop": null})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(cloud.get(&path).await["server"]["status"], "SHUTOFF");
    let (status, _) = cloud
        .call(
            "POST",
            &format!("{path}/action"),
            Some(json!({"os-stop": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_image_is_uploaded_downloaded_and_imported_into_another_region() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let (status, image) = cloud
        .call(
            "POST",
            "/RegionOne/image/v2/images",
            Some(json!({"name": "golden", "disk_format": "raw", "container_format": "bare"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{image}");
    assert_eq!(image["status"], "queued");
    let image = id(&image);
    let mut data = vec![0u8; 300_000];
    data[..6].copy_from_slice(b"golden");
    data[200_000] = 9;
    let response = cloud
        .http
        .put(cloud.url(&format!("/RegionOne/image/v2/images/{image}/file")))
        .header("x-auth-token", &cloud.token)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PUT file");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let path = format!("/RegionOne/image/v2/images/{image}");
    let active = cloud.get(&path).await;
    assert_eq!(active["status"], "active", "the upload returns once stored");
    assert_eq!(active["size"], 300_000);
    assert_eq!(active["os_hash_algo"], "sha512");
    assert_eq!(active["checksum"].as_str().map(str::len), Some(32));

    let download = |region: &str, image: &str| {
        cloud
            .http
            .get(cloud.url(&format!("/{region}/image/v2/images/{image}/file")))
            .header("x-auth-token", &cloud.token)
            .send()
    };
    let body = download("RegionOne", &image).await.expect("GET file");
    assert_eq!(
        body.headers()["content-md5"],
        active["checksum"].as_str().expect("md5")
    );
    assert_eq!(body.bytes().await.expect("data"), data);

    let (_, copy) = cloud
        .call(
            "POST",
            "/RegionTwo/image/v2/images",
            Some(json!({"name": "golden", "disk_format": "raw", "container_format": "bare"})),
        )
        .await;
    let copy = id(&copy);
    let (status, _) = cloud
        .call(
            "POST",
            &format!("/RegionTwo/image/v2/images/{copy}/import"),
            Some(json!({"method": {
                "name": "glance-download", "glance_image_id": image,
                "glance_region": "RegionOne", "glance_service_interface": "public"
            }})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let copy_path = format!("/RegionTwo/image/v2/images/{copy}");
    assert_eq!(cloud.get(&copy_path).await["status"], "importing");
    let imported = cloud.wait_for(&copy_path, "/status", "active").await;
    assert_eq!(imported["os_hash_value"], active["os_hash_value"]);
    let body = download("RegionTwo", &copy).await.expect("GET file");
    assert_eq!(body.bytes().await.expect("data"), data);

    let (status, _) = cloud
        .call("GET", "/RegionOne/image/v2/images/no-such-image", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_volume_uploaded_to_an_image_carries_its_blocks() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let volume = web_volume(&cloud).await;
    let (status, reply) = cloud
        .call(
            "POST",
            &format!("/RegionOne/volume/v3/{{p}}/volumes/{}/action", id(&volume)),
            Some(json!({"os-volume_upload_image": {"image_name": "web-1-image", "force": true, "disk_format": "raw", "container_format": "bare"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let image = reply["os-volume_upload_image"]["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();
    let active = cloud
        .wait_for(
            &format!("/RegionOne/image/v2/images/{image}"),
            "/status",
            "active",
        )
        .await;
    assert_eq!(active["size"], 1 << 20);
    let data = site
        .disks()
        .read_at(&format!("image-{image}"), 0, 15)
        .expect("image blocks");
    assert_eq!(data, b"web-1 boot disk");
    let volume = cloud
        .get(&format!(
            "/RegionOne/volume/v3/{{p}}/volumes/{}",
            id(&volume)
        ))
        .await;
    assert_eq!(volume["volume"]["status"], "in-use");
}

#[tokio::test]
async fn member_weights_change_through_pending_update() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let pools = cloud.get("/RegionOne/load-balancer/v2/lbaas/pools").await;
    let pool = id(&pools["pools"][0]);
    let members = cloud
        .get(&format!(
            "/RegionOne/load-balancer/v2/lbaas/pools/{pool}/members"
        ))
        .await;
    let standby = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["name"] == "web-1-standby")
        .expect("seeded standby member");
    assert_eq!(standby["weight"], 0);
    let path = format!(
        "/RegionOne/load-balancer/v2/lbaas/pools/{pool}/members/{}",
        id(standby)
    );

    let (status, body) = cloud
        .call("PUT", &path, Some(json!({"member": {"weight": 300}})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = cloud
        .call("PUT", &path, Some(json!({"member": {"weight": 256}})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["member"]["provisioning_status"], "PENDING_UPDATE");
    let (status, body) = cloud
        .call("PUT", &path, Some(json!({"member": {"weight": 1}})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .is_some_and(|s| s.contains("immutable")),
        "{body}"
    );
    let settled = cloud
        .wait_for(&path, "/member/provisioning_status", "ACTIVE")
        .await;
    assert_eq!(settled["member"]["weight"], 256);
}

#[tokio::test]
async fn a_group_snapshot_captures_every_volume_of_the_group_at_once() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let v = Some("volume 3.14");
    let (status, _) = cloud
        .call("GET", "/RegionOne/volume/v3/{p}/group_snapshots", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "groups need 3.14");

    let (status, group) = cloud
        .call_at(
            v,
            "POST",
            "/RegionOne/volume/v3/{p}/groups",
            Some(json!({"group": {"name": "shop", "group_type": "default", "volume_types": ["lvmdriver-1"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{group}");
    let group = id(&group["group"]);
    let path = format!("/RegionOne/volume/v3/{{p}}/groups/{group}");
    let (_, shown) = cloud.call_at(v, "GET", &path, None).await;
    assert_eq!(shown["group"]["status"], "creating");
    cloud
        .wait_for_at(v, &path, "/group/status", "available")
        .await;
    let volumes = cloud.get("/RegionOne/volume/v3/{p}/volumes").await;
    let ids: Vec<String> = volumes["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(id)
        .collect();
    let (status, body) = cloud
        .call_at(
            v,
            "PUT",
            &path,
            Some(json!({"group": {"add_volumes": ids.join(",")}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, shown) = cloud.call_at(v, "GET", &path, None).await;
    assert_eq!(shown["group"]["volumes"].as_array().map(Vec::len), Some(2));

    let (status, snap) = cloud
        .call_at(
            v,
            "POST",
            "/RegionOne/volume/v3/{p}/group_snapshots",
            Some(json!({"group_snapshot": {"group_id": group, "name": "consistent"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{snap}");
    let snap = id(&snap["group_snapshot"]);
    let snap_path = format!("/RegionOne/volume/v3/{{p}}/group_snapshots/{snap}");
    let (_, shown) = cloud.call_at(v, "GET", &snap_path, None).await;
    assert_eq!(shown["group_snapshot"]["status"], "creating");
    cloud
        .wait_for_at(v, &snap_path, "/group_snapshot/status", "available")
        .await;
    let members = cloud
        .get(&format!(
            "/RegionOne/volume/v3/{{p}}/snapshots/detail?group_snapshot_id={snap}"
        ))
        .await;
    let members = members["snapshots"].as_array().expect("snapshots");
    assert_eq!(members.len(), 2);
    for member in members {
        assert_eq!(member["status"], "available");
        let data = site
            .disks()
            .read_at(&format!("snapshot-{}", id(member)), 0, 4)
            .expect("snapshot blocks");
        assert!(data == *b"web-" || data == *b"db-1", "{data:?}");
    }
}

/// A volume created from a fresh snapshot of the web server's disk, once
/// available.
async fn snapshot_copy(cloud: &Cloud, name: &str) -> String {
    let volume = web_volume(cloud).await;
    let (_, snap) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/snapshots",
            Some(json!({"snapshot": {"volume_id": volume["id"], "name": name, "force": true}})),
        )
        .await;
    let snap = id(&snap["snapshot"]);
    cloud
        .wait_for(
            &format!("/RegionOne/volume/v3/{{p}}/snapshots/{snap}"),
            "/snapshot/status",
            "available",
        )
        .await;
    let (_, created) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/volumes",
            Some(json!({"volume": {"snapshot_id": snap, "name": name}})),
        )
        .await;
    let copy = id(&created["volume"]);
    cloud
        .wait_for(
            &format!("/RegionOne/volume/v3/{{p}}/volumes/{copy}"),
            "/volume/status",
            "available",
        )
        .await;
    copy
}

/// Ask Nova to boot the mover appliance with `volume` attached and
/// `user_data` (base64, as given): Nova's answer.
async fn boot_appliance(
    cloud: &Cloud,
    volume: &str,
    mode: &str,
    user_data: Option<&str>,
) -> (StatusCode, Value) {
    let images = cloud
        .get(&format!(
            "/RegionOne/image/v2/images?name={}",
            rebound_lab::openstack::MOVER_IMAGE
        ))
        .await;
    let image = id(&images["images"][0]);
    let mut server = json!({
        "name": "rebound-mover-test", "flavorRef": "1", "imageRef": image,
        "networks": "none", "metadata": {"rebound:mover_mode": mode},
        "block_device_mapping_v2": [
            {"boot_index": 0, "uuid": image, "source_type": "image", "destination_type": "local"},
            {"boot_index": -1, "uuid": volume, "source_type": "volume", "destination_type": "volume", "delete_on_termination": true}
        ]
    });
    if let Some(data) = user_data {
        server["user_data"] = json!(data);
    }
    cloud
        .call(
            "POST",
            "/RegionOne/compute/v2.1/servers",
            Some(json!({ "server": server })),
        )
        .await
}

/// Boot the mover appliance with `volume` attached and a token in its user
/// data, as the plugin does; its server path once it is `ACTIVE`, the URL
/// it published and the token.
async fn appliance(cloud: &Cloud, volume: &str, mode: &str) -> (String, String, String) {
    use base64::Engine;
    let token = format!("lab-test-token-{volume}");
    let user_data = base64::engine::general_purpose::STANDARD
        .encode(format!("#!/bin/sh\nREBOUND_MOVER_TOKEN={token}\n"));
    let (status, server) = boot_appliance(cloud, volume, mode, Some(&user_data)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{server}");
    let path = format!("/RegionOne/compute/v2.1/servers/{}", id(&server["server"]));
    let active = cloud.wait_for(&path, "/server/status", "ACTIVE").await;
    let server = &active["server"];
    assert_eq!(server["OS-EXT-SRV-ATTR:user_data"], user_data.as_str());
    let metadata = &server["metadata"];
    assert!(
        !metadata.to_string().contains(&token),
        "the token is in no metadata: {metadata}"
    );
    let url = metadata["rebound:mover_url"].as_str().expect("the URL");
    (path, url.to_owned(), token)
}

#[tokio::test]
async fn a_mover_appliance_without_a_token_fails_and_bad_user_data_is_refused() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let copy = snapshot_copy(&cloud, "export").await;
    let (status, body) = boot_appliance(&cloud, &copy, "export", Some("not base64!")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["badRequest"]["message"],
        "User data needs to be valid base 64."
    );

    let (status, server) = boot_appliance(&cloud, &copy, "export", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{server}");
    let path = format!("/RegionOne/compute/v2.1/servers/{}", id(&server["server"]));
    let failed = cloud.wait_for(&path, "/server/status", "ERROR").await;
    let fault = failed["server"]["fault"]["message"]
        .as_str()
        .expect("a fault");
    assert!(fault.contains("REBOUND_MOVER_TOKEN"), "{fault}");
    assert!(failed["server"]["metadata"]["rebound:mover_url"].is_null());
}

#[tokio::test]
async fn a_mover_appliance_serves_its_volume_until_deleted() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let http = reqwest::Client::new();

    // An export: read-only.
    let copy = snapshot_copy(&cloud, "export").await;
    let (path, url, token) = appliance(&cloud, &copy, "export").await;
    let read = http
        .get(&url)
        .bearer_auth(&token)
        .header("range", "bytes=0-14")
        .send()
        .await
        .expect("ranged read");
    assert_eq!(read.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        read.bytes().await.expect("body").as_ref(),
        b"web-1 boot disk"
    );
    let refused = http
        .put(&url)
        .bearer_auth(&token)
        .header("content-range", "bytes 0-4/1048576")
        .body("xxxxx")
        .send()
        .await
        .expect("write");
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let stranger = http
        .get(&url)
        .bearer_auth("guess")
        .send()
        .await
        .expect("GET");
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    let volume_path = format!("/RegionOne/volume/v3/{{p}}/volumes/{copy}");
    assert_eq!(cloud.get(&volume_path).await["volume"]["status"], "in-use");

    // Deleting the appliance stops its agent, and its volume (booted with
    // delete_on_termination) goes with it.
    let (status, _) = cloud.call("DELETE", &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut gone = false;
    for _ in 0..100 {
        let (status, _) = cloud.call("GET", &volume_path, None).await;
        if status == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the appliance's volume is deleted with it");
    assert!(http.get(&url).bearer_auth(&token).send().await.is_err());

    // An import: writable, the data lands in the volume.
    let target = snapshot_copy(&cloud, "import").await;
    let (_, url, token) = appliance(&cloud, &target, "import").await;
    let written = http
        .put(&url)
        .bearer_auth(&token)
        .header("content-range", "bytes 4096-4110/1048576")
        .body("imported bytes!")
        .send()
        .await
        .expect("write");
    assert!(written.status().is_success(), "{}", written.status());
    assert_eq!(
        site.disks()
            .read_at(&format!("volume-{target}"), 4096, 15)
            .expect("read"),
        b"imported bytes!"
    );
}

#[tokio::test]
async fn a_locked_server_refuses_actions_and_metadata_changes_until_unlocked() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let servers = cloud
        .get("/RegionOne/compute/v2.1/servers?name=web-1")
        .await;
    let path = format!(
        "/RegionOne/compute/v2.1/servers/{}",
        id(&servers["servers"][0])
    );
    let (status, body) = cloud
        .call(
            "POST",
            &format!("{path}/metadata"),
            Some(json!({"metadata": {"rebound:fence_epoch": "2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["rebound:fence_epoch"], "2");
    let (status, body) = cloud
        .call(
            "POST",
            &format!("{path}/metadata"),
            Some(json!({"metadata": {"rebound/epoch": "2"}})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "Nova's key pattern: {body}"
    );

    let action_path = format!("{path}/action");
    let action = |body: Value| cloud.call("POST", &action_path, Some(body));
    assert_eq!(
        action(json!({"os-stop": null})).await.0,
        StatusCode::ACCEPTED
    );
    let (status, _) = action(json!({"lock": {"locked_reason": "fenced at epoch 2"}})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let shown = cloud.get(&path).await;
    assert_eq!(
        (
            &shown["server"]["locked"],
            &shown["server"]["locked_reason"]
        ),
        (&json!(true), &json!("fenced at epoch 2"))
    );
    let (status, body) = action(json!({"os-start": null})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["conflictingRequest"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is locked"))
    );
    let (status, _) = cloud
        .call(
            "PUT",
            &format!("{path}/metadata/rebound:fence_epoch"),
            Some(json!({"meta": {"rebound:fence_epoch": "3"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        cloud.call("DELETE", &path, None).await.0,
        StatusCode::CONFLICT
    );

    assert_eq!(
        action(json!({"unlock": null})).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        action(json!({"os-start": null})).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(cloud.get(&path).await["server"]["status"], "ACTIVE");
}

#[tokio::test]
async fn a_backup_of_a_snapshot_holds_the_snapshot_not_the_volume() {
    let site = site().await;
    let cloud = Cloud::login(&site).await;
    let volume = web_volume(&cloud).await;
    let vid = id(&volume);
    let (_, snap) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/snapshots",
            Some(json!({"snapshot": {"volume_id": vid, "force": true}})),
        )
        .await;
    let snap = id(&snap["snapshot"]);
    cloud
        .wait_for(
            &format!("/RegionOne/volume/v3/{{p}}/snapshots/{snap}"),
            "/snapshot/status",
            "available",
        )
        .await;
    // Written after the snapshot: not in the backup.
    site.disks()
        .write(&format!("volume-{vid}"), 0, b"WEB-1")
        .expect("write");
    let (status, backup) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/backups",
            Some(json!({"backup": {"volume_id": vid, "snapshot_id": snap, "force": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backup}");
    let backup = id(&backup["backup"]);
    cloud
        .wait_for(
            &format!("/RegionOne/volume/v3/{{p}}/backups/{backup}"),
            "/backup/status",
            "available",
        )
        .await;
    assert_eq!(
        site.disks()
            .read_at(&format!("backup-{backup}"), 0, 15)
            .expect("read"),
        b"web-1 boot disk"
    );
    let (status, body) = cloud
        .call(
            "POST",
            "/RegionOne/volume/v3/{p}/backups",
            Some(json!({"backup": {"volume_id": vid, "snapshot_id": "nope", "force": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
