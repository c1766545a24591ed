//! The KubeVirt simulator over HTTPS (trusting its CA), for what the
//! Python client's fidelity check does not reach: the data plane behind
//! snapshots, exports and uploads, VMs on DataVolume templates, run
//! strategies, the garbage collector, validation and the faults API.

use std::time::Duration;

use rebound_lab::kubevirt::{blank_data_volume, vm_object};
use rebound_lab::{KubeVirtOptions, KubeVirtSite};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// A `prod` namespace with one running VM on an 8 MiB root volume.
async fn site() -> KubeVirtSite {
    KubeVirtSite::start(KubeVirtOptions {
        latency: Duration::from_millis(100),
        objects: vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
            blank_data_volume("prod", "web-1-root", "8Mi"),
            vm_object("prod", "web-1", json!({"app": "shop"}), "prod-net"),
        ],
        ..KubeVirtOptions::default()
    })
    .await
    .expect("start the KubeVirt simulator")
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(site: &KubeVirtSite) -> Self {
        let ca = reqwest::Certificate::from_pem(site.ca_pem.as_bytes()).expect("CA");
        Self {
            http: reqwest::Client::builder()
                .add_root_certificate(ca)
                .build()
                .expect("client"),
            base: site.endpoint(),
            token: site.token.clone(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            let kind = if method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            request = request.header("content-type", kind).body(body.to_string());
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// Poll an object until `done` holds.
    async fn until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let (status, object) = self.call(Method::GET, path, None).await;
            if status.is_success() && done(&object) {
                return object;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never got there");
    }
}

const NS: &str = "/namespaces/prod";

fn kv(plural: &str) -> String {
    format!("/apis/kubevirt.io/v1{NS}/{plural}")
}

fn cdi(plural: &str) -> String {
    format!("/apis/cdi.kubevirt.io/v1beta1{NS}/{plural}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_export_serves_the_captured_data_behind_its_token() {
    let site = site().await;
    let api = Api::new(&site);
    site.guest_write("prod", "web-1", 0, MIB, b"before the snapshot")
        .expect("write");
    let snapshots = format!("/apis/snapshot.kubevirt.io/v1beta1{NS}/virtualmachinesnapshots");
    api.ok(
        Method::POST,
        &snapshots,
        Some(json!({"metadata": {"name": "snap-1"},
                    "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web-1"}}})),
    )
    .await;
    site.guest_write("prod", "web-1", 0, MIB, b"after the snapshot!")
        .expect("write");
    let snapshot = api
        .until(&format!("{snapshots}/snap-1"), |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
    assert_eq!(snapshot["status"]["phase"], "Succeeded");
    assert_eq!(
        snapshot["status"]["indications"],
        json!(["Online", "GuestAgent"])
    );
    let content = api
        .ok(
            Method::GET,
            &format!(
                "/apis/snapshot.kubevirt.io/v1beta1{NS}/virtualmachinesnapshotcontents/{}",
                snapshot["status"]["virtualMachineSnapshotContentName"]
                    .as_str()
                    .expect("content name")
            ),
            None,
        )
        .await;
    let backup = &content["spec"]["volumeBackups"][0];
    assert_eq!(
        backup["persistentVolumeClaim"]["metadata"]["name"],
        "web-1-root"
    );
    assert_eq!(
        content["spec"]["source"]["virtualMachine"]["metadata"]["name"],
        "web-1"
    );

    let exports = format!("/apis/export.kubevirt.io/v1beta1{NS}/virtualmachineexports");
    api.ok(
        Method::POST,
        &exports,
        Some(json!({"metadata": {"name": "exp-1"},
                    "spec": {"source": {"apiGroup": "snapshot.kubevirt.io",
                                        "kind": "VirtualMachineSnapshot", "name": "snap-1"}}})),
    )
    .await;
    let export = api
        .until(&format!("{exports}/exp-1"), |e| {
            e["status"]["phase"] == "Ready"
        })
        .await;
    let secret = export["status"]["tokenSecretRef"]
        .as_str()
        .expect("token secret");
    let secret = api
        .ok(Method::GET, &format!("/api/v1{NS}/secrets/{secret}"), None)
        .await;
    let token = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().expect("token"))
            .expect("base64");
        String::from_utf8(raw).expect("utf-8")
    };
    let volume = &export["status"]["links"]["external"]["volumes"][0];
    assert_eq!(volume["name"], "web-1-root");
    let url = volume["formats"][0]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(url.starts_with(&site.data_url()), "{url}");
    assert!(url.ends_with("/virtualmachineexports/exp-1/volumes/web-1-root/disk.img"));

    // The export server is HTTPS; the export's links carry its CA.
    let cert = export["status"]["links"]["external"]["cert"]
        .as_str()
        .expect("cert");
    assert_eq!(cert, site.ca_pem);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let read = |token: &str| {
        http.get(&url)
            .header("x-kubevirt-export-token", token)
            .header("range", format!("bytes={MIB}-{}", MIB + 18))
            .send()
    };
    assert_eq!(read("wrong").await.expect("read").status(), 401);
    let response = read(&token).await.expect("read");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        b"before the snapshot",
        "the export serves the data at capture time"
    );
    let digests: Vec<String> = http
        .get(format!("{url}?digests={}", 4 * MIB))
        .header("x-kubevirt-export-token", &token)
        .send()
        .await
        .expect("digests")
        .json()
        .await
        .expect("digest list");
    assert_eq!(digests.len(), 2, "an 8 MiB volume in 4 MiB blocks");
    assert_eq!(site.open_transfers(), 1);

    api.ok(Method::DELETE, &format!("{exports}/exp-1"), None)
        .await;
    assert_eq!(read(&token).await.expect("read").status(), 404);
    assert_eq!(site.open_transfers(), 0);
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/api/v1{NS}/secrets/export-token-exp-1"),
            None,
        )
        .await;
    assert_eq!(status, 404, "the generated token goes with its export");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_write_provisioned_volumes_until_a_vm_holds_them() {
    let site = site().await;
    let api = Api::new(&site);
    api.ok(
        Method::POST,
        &cdi("datavolumes"),
        Some(blank_data_volume("prod", "imported", "8Mi")),
    )
    .await;
    let tokens = format!("/apis/upload.cdi.kubevirt.io/v1beta1{NS}/uploadtokenrequests");
    let request = json!({"metadata": {"name": "imported"}, "spec": {"pvcName": "imported"}});
    let (status, refused) = api.call(Method::POST, &tokens, Some(request.clone())).await;
    assert_eq!(status, 400, "not provisioned yet: {refused}");
    let dv = api
        .until(&format!("{}/imported", cdi("datavolumes")), |dv| {
            dv["status"]["phase"] == "Succeeded"
        })
        .await;
    assert_eq!(dv["status"]["progress"], "100.0%");
    let pvc = api
        .ok(
            Method::GET,
            &format!("/api/v1{NS}/persistentvolumeclaims/imported"),
            None,
        )
        .await;
    assert_eq!(pvc["status"]["capacity"]["storage"], (8 * MIB).to_string());
    let token = api.ok(Method::POST, &tokens, Some(request.clone())).await["status"]["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let upload = format!("{}/v1beta1/upload", site.data_url());
    let http = &api.http;
    let write = |token: &str, offset: u64, data: &'static [u8]| {
        http.put(&upload)
            .bearer_auth(token)
            .header(
                "content-range",
                format!(
                    "bytes {offset}-{}/{}",
                    offset + data.len() as u64 - 1,
                    8 * MIB
                ),
            )
            .body(data)
            .send()
    };
    assert_eq!(write("wrong", 0, b"x").await.expect("put").status(), 401);
    let written = write(&token, 2 * MIB, b"imported bytes")
        .await
        .expect("put");
    assert!(written.status().is_success(), "{}", written.status());
    let disk = site.read_pvc("prod", "imported").expect("read");
    assert_eq!(
        &disk[2 * MIB as usize..2 * MIB as usize + 14],
        b"imported bytes"
    );

    // A VM cloning it through a DataVolume template runs once the clone is
    // ready; its copy holds the same bytes.
    let mut vm = vm_object("prod", "restored", json!({}), "prod-net");
    vm["spec"]["running"] = Value::Null;
    vm["spec"]["runStrategy"] = json!("Always");
    vm["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] = json!("restored-root");
    vm["spec"]["dataVolumeTemplates"] = json!([{
        "metadata": {"name": "restored-root"},
        "spec": {"source": {"pvc": {"namespace": "prod", "name": "imported"}},
                 "storage": {"resources": {"requests": {"storage": "8Mi"}}}},
    }]);
    let created = api.ok(Method::POST, &kv("virtualmachines"), Some(vm)).await;
    assert_eq!(created["status"]["printableStatus"], "Provisioning");
    api.until(&format!("{}/restored", kv("virtualmachines")), |vm| {
        vm["status"]["printableStatus"] == "Running"
    })
    .await;
    assert_eq!(
        site.read_pvc("prod", "restored-root").expect("clone"),
        disk,
        "a clone is a copy"
    );

    // A running VM holds its volume: no upload into it.
    let (status, body) = api
        .call(
            Method::POST,
            &tokens,
            Some(json!({"metadata": {"name": "r"}, "spec": {"pvcName": "restored-root"}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Deleting the VM deletes what it owns: its DataVolume, PVC and disk.
    let images = site.disk_images();
    api.ok(
        Method::DELETE,
        &format!("{}/restored", kv("virtualmachines")),
        None,
    )
    .await;
    for path in [
        format!("{}/restored-root", cdi("datavolumes")),
        format!("/api/v1{NS}/persistentvolumeclaims/restored-root"),
        format!("{}/restored", kv("virtualmachineinstances")),
    ] {
        assert_eq!(api.call(Method::GET, &path, None).await.0, 404, "{path}");
    }
    assert_eq!(site.disk_images(), images - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_vm_stops_and_its_guest_cannot_write() {
    let site = site().await;
    let api = Api::new(&site);
    let vm = format!("{}/web-1", kv("virtualmachines"));
    let (status, body) = api
        .call(
            Method::PATCH,
            &vm,
            Some(json!({"spec": {"runStrategy": "Halted"}})),
        )
        .await;
    assert_eq!(status, 422, "running and runStrategy together: {body}");
    assert_eq!(body["reason"], "Invalid");
    let patched = api
        .ok(
            Method::PATCH,
            &vm,
            Some(
                json!({"metadata": {"annotations": {"rebound.io/fencing-epoch": "2"}},
                        "spec": {"running": null, "runStrategy": "Halted"}}),
            ),
        )
        .await;
    assert_eq!(patched["status"]["printableStatus"], "Stopped");
    assert_eq!(
        patched["metadata"]["annotations"]["rebound.io/fencing-epoch"],
        "2"
    );
    let err = site
        .guest_write("prod", "web-1", 0, 0, b"split brain?")
        .expect_err("stopped");
    assert!(err.contains("not running"), "{err}");
    api.ok(
        Method::PATCH,
        &vm,
        Some(json!({"spec": {"runStrategy": "Always"}})),
    )
    .await;
    site.guest_write("prod", "web-1", 0, 0, b"back")
        .expect("running again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_take_at_most_three_alternate_backends() {
    let site = site().await;
    let api = Api::new(&site);
    let routes = format!("/apis/route.openshift.io/v1{NS}/routes");
    let backend = |name: &str| json!({"kind": "Service", "name": name, "weight": 10});
    let route = json!({"metadata": {"name": "www"},
        "spec": {"host": "www.example.org", "to": backend("a"),
                 "alternateBackends": [backend("b"), backend("c"), backend("d")]}});
    let created = api.ok(Method::POST, &routes, Some(route)).await;
    assert_eq!(created["status"]["ingress"][0]["host"], "www.example.org");
    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("{routes}/www"),
            Some(json!({"spec": {"alternateBackends": [backend("b"), backend("c"), backend("d"), backend("e")]}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("must have at most 3 items")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_throttle_and_take_the_cluster_down() {
    let site = site().await;
    let api = Api::new(&site);
    let lab = |path: &str| format!("{}/_lab/{path}", site.endpoint());
    let set = api
        .http
        .post(lab("faults"))
        .json(
            &json!({"error_rate": 1.0, "status": 429, "retry_after": 3, "service": "kubevirt.io"}),
        )
        .send()
        .await
        .expect("set faults");
    assert_eq!(set.status(), 200);
    let throttled = api
        .http
        .get(format!("{}{}", site.endpoint(), kv("virtualmachines")))
        .bearer_auth(&site.token)
        .send()
        .await
        .expect("list");
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "3");
    let status: Value = throttled.json().await.expect("Status");
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("TooManyRequests"))
    );
    // Only the named API group is affected.
    api.ok(Method::GET, "/api/v1/namespaces", None).await;
    let bad = api
        .http
        .post(lab("faults"))
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .expect("bad faults");
    assert_eq!(bad.status(), 400);
    api.http.delete(lab("faults")).send().await.expect("clear");
    api.ok(Method::GET, &kv("virtualmachines"), None).await;

    site.set_down(true);
    assert_eq!(api.call(Method::GET, "/readyz", None).await.0, 503);
    site.set_down(false);
    assert_eq!(api.call(Method::GET, "/readyz", None).await.0, 200);
}
