//! Packages are verified at load: digest, signature, contract version and
//! manifest; a refused package says why. Installing a new build swaps
//! atomically while calls in flight finish on the old one.

mod support;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_runtime::{Health, LoadError, PluginPackage, RuntimeConfig, TrustPolicy};
use support::*;

async fn refused(package: PluginPackage) -> LoadError {
    runtime()
        .load(&package)
        .await
        .expect_err("package must be refused")
}

#[tokio::test]
async fn a_signed_package_loads_and_reports_itself() {
    let rt = runtime();
    let plugin = rt.load(&package("example")).await.expect("load");
    assert_eq!(plugin.info.name, "example");
    assert_eq!(plugin.info.platform, "example");
    assert_eq!(plugin.digest.len(), 64);
}

#[tokio::test]
async fn a_tampered_component_is_refused_for_its_digest() {
    let mut pkg = package("example");
    pkg.wasm.push(0);
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("component digest is sha256:"),
        "{err}"
    );
}

#[tokio::test]
async fn a_package_signed_by_an_untrusted_key_is_refused() {
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let pkg = PluginPackage::build(&template("example"), wasm("example"), Some(&stranger))
        .expect("build");
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::BadSignature { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("does not verify against any of the 1 trusted key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_manifest_changed_after_signing_is_refused() {
    let mut pkg = package("example");
    pkg.manifest = with_capabilities(&pkg.manifest, "[]");
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::BadSignature { .. }), "{err}");
}

#[tokio::test]
async fn an_unsigned_package_loads_only_when_the_operator_allows_it() {
    let pkg = PluginPackage::build(&template("example"), wasm("example"), None).expect("build");
    let err = refused(pkg.clone()).await;
    assert!(matches!(err, LoadError::Unsigned { .. }), "{err}");
    assert!(err.to_string().contains("allow_unsigned"), "{err}");

    let rt = rebound_runtime::Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir()),
        trust: TrustPolicy {
            trusted_keys: Vec::new(),
            allow_unsigned: true,
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    rt.load(&pkg).await.expect("unsigned allowed");
}

#[tokio::test]
async fn a_plugin_built_for_another_contract_version_is_refused() {
    let tpl = template("example").replace("wit = \"^0.2\"", "wit = \"^0.3\"");
    let pkg = PluginPackage::build(&tpl, wasm("example"), Some(&publisher_key())).expect("build");
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::IncompatibleWit { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("^0.3") && text.contains("supported: 0.1.x, 0.2.x"),
        "{text}"
    );
}

#[tokio::test]
async fn a_manifest_that_misstates_the_plugin_is_refused() {
    let tpl = with_capabilities(&template("example"), "[\"changed-blocks\"]");
    let pkg = PluginPackage::build(&tpl, wasm("example"), Some(&publisher_key())).expect("build");
    let err = refused(pkg).await;
    assert!(
        matches!(
            err,
            LoadError::ManifestMismatch {
                field: "capabilities",
                ..
            }
        ),
        "{err}"
    );

    let tpl = template("example").replace("name = \"example\"", "name = \"impostor\"");
    let pkg = PluginPackage::build(&tpl, wasm("example"), Some(&publisher_key())).expect("build");
    let err = refused(pkg).await;
    assert!(
        matches!(err, LoadError::ManifestMismatch { field: "name", .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_manifest_names_the_field() {
    let tpl = template("example").replace("version = \"0.1.0\"", "version = \"one\"");
    let err = PluginPackage::build(&tpl, wasm("example"), None).expect_err("bad version");
    assert!(
        err.to_string()
            .contains("manifest field `version` is invalid"),
        "{err}"
    );
}

#[tokio::test]
async fn something_that_is_not_a_component_is_refused() {
    let pkg = PluginPackage::build(
        &template("example"),
        b"\0asm\x01\0\0\0".to_vec(),
        Some(&publisher_key()),
    )
    .expect("build");
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::InvalidComponent { .. }), "{err}");
}

/// Append a custom section: a different build of the same plugin.
fn rebuilt(mut wasm: Vec<u8>) -> Vec<u8> {
    let name = b"rebound-test";
    let payload = b"second build";
    wasm.push(0);
    wasm.push((1 + name.len() + payload.len()) as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    wasm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_a_new_build_swaps_atomically_and_calls_in_flight_finish_on_the_old_one() {
    let rt = runtime();
    let site = ExampleSite::start(ExampleOptions {
        api_latency: Duration::from_millis(400),
        ..Default::default()
    })
    .await
    .expect("site");
    let first = load(&rt, "example").await;
    let grant = grant(&site, "lab-a");

    let pinned = rt.active("example").expect("active");
    let ctx = ctx(vec![grant.clone()]);
    let in_flight = {
        let rt = &rt;
        async move { rt.call(&pinned, &ctx, Health("lab-a".into())).await }
    };
    let swap = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = PluginPackage::build(
            &template("example"),
            rebuilt(wasm("example")),
            Some(&publisher_key()),
        )
        .expect("build");
        let second = rt.load(&second).await.expect("second build loads");
        rt.install(second.clone());
        second
    };
    let (old_call, second) = tokio::join!(in_flight, swap);
    old_call.expect("the call in flight finished on the first build");
    assert_ne!(first.digest, second.digest);
    assert_eq!(rt.active("example").expect("active").digest, second.digest);

    let after = rt.active("example").expect("active");
    rt.call(&after, &support::ctx(vec![grant]), Health("lab-a".into()))
        .await
        .expect("new calls run on the second build");
}

/// Rename every occurrence of one name inside a component (same length, so
/// the binary stays well-formed): how a plugin built against another
/// contract, or importing something else, looks to the host.
fn renamed(wasm: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = wasm.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from.as_bytes() {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "{from} not found in the component");
    out
}

#[tokio::test]
async fn a_component_exporting_another_contract_version_is_refused() {
    let wasm = renamed(
        &wasm("example"),
        "rebound:provider/provider@0.2.0",
        "rebound:provider/provider@0.3.0",
    );
    let pkg =
        PluginPackage::build(&template("example"), wasm, Some(&publisher_key())).expect("build");
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::IncompatibleWit { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("targets rebound:provider 0.3.0") && text.contains("supported: 0.1.x, 0.2.x"),
        "{text}"
    );
}

#[tokio::test]
async fn a_component_importing_what_plugins_are_not_granted_is_refused() {
    let wasm = renamed(
        &wasm("example"),
        "wasi:cli/stdin@0.2.12",
        "wasi:xyz/stdin@0.2.12",
    );
    let pkg =
        PluginPackage::build(&template("example"), wasm, Some(&publisher_key())).expect("build");
    let err = refused(pkg).await;
    assert!(matches!(err, LoadError::ForbiddenImport { .. }), "{err}");
    assert!(
        err.to_string().contains("imports `wasi:xyz/stdin@0.2.12`"),
        "{err}"
    );
}

/// The manifest with its `capabilities` line replaced.
fn with_capabilities(manifest: &str, list: &str) -> String {
    let changed: Vec<String> = manifest
        .lines()
        .map(|line| {
            if line.starts_with("capabilities =") {
                format!("capabilities = {list}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_ne!(changed.join("\n"), manifest.trim_end(), "nothing replaced");
    changed.join("\n") + "\n"
}
