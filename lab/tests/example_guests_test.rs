//! The example site's guests: a running VM's service ports answer on its
//! loopback address, a fenced VM's close, and an application set to fail
//! answers with that status.

use std::time::Duration;

use rebound_lab::{ExampleOptions, ExampleSite};
use serde_json::{Value, json};

/// Whether `addr` accepts a connection, asked until it says `want` (at
/// most 200 times, 25 ms apart: the site reconciles its guests every 25 ms).
async fn becomes(addr: &str, want: bool) -> bool {
    for _ in 0..200 {
        let open = tokio::net::TcpStream::connect(addr).await.is_ok();
        if open == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn address(vm: &Value) -> String {
    vm["nics"][0]["ips"][0].as_str().expect("ip").to_owned()
}

#[tokio::test]
async fn guests_serve_while_their_vm_runs() {
    let site = ExampleSite::start(ExampleOptions {
        guests: true,
        ..ExampleOptions::default()
    })
    .await
    .expect("site");
    let vms = site.vms();
    let db = vms.iter().find(|vm| vm["name"] == "db-1").expect("db-1");
    let app = vms.iter().find(|vm| vm["name"] == "app-1").expect("app-1");
    let (db_ip, app_ip) = (address(db), address(app));
    assert!(
        db_ip.starts_with("127.") && db_ip.ends_with(".31"),
        "{db_ip}"
    );
    let db_port = format!("{db_ip}:5432");
    assert!(becomes(&db_port, true).await, "db-1 serves 5432");

    let url = format!("http://{app_ip}:8080/healthz");
    assert!(becomes(&format!("{app_ip}:8080"), true).await);
    let status = reqwest::get(&url).await.expect("get").status();
    assert_eq!(status, 200);
    site.set_service_status("app-1", 8080, 503);
    let status = reqwest::get(&url).await.expect("get").status();
    assert_eq!(status, 503, "the application came up broken");

    let fenced = reqwest::Client::new()
        .post(format!(
            "{}/v1/vms/{}/fence",
            site.endpoint(),
            db["id"].as_str().expect("id")
        ))
        .bearer_auth(&site.token)
        .json(&json!({"key": "k1", "epoch": 1}))
        .send()
        .await
        .expect("fence");
    assert!(fenced.status().is_success());
    assert!(
        becomes(&db_port, false).await,
        "a fenced VM's guest is down"
    );

    site.set_down(true);
    assert!(
        becomes(&format!("{app_ip}:8080"), false).await,
        "a site that is down serves nothing"
    );
}
