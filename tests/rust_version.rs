//! The workspace's `rust-version` must be true: at least the highest
//! `rust-version` any locked dependency declares (read from `cargo
//! metadata`), so a dependency update that needs a newer Rust fails here
//! instead of on a user's older toolchain.

use std::process::Command;

fn version(s: &str) -> Vec<u64> {
    s.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn workspace_rust_version_covers_every_locked_dependency() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let packages = meta["packages"].as_array().expect("packages");
    let mut ours = Vec::new();
    let mut needed: Option<(Vec<u64>, String)> = None;
    for p in packages {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        let name = format!(
            "{} {}",
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?")
        );
        if members.contains(&p["id"].as_str().unwrap_or("")) {
            ours.push((version(rv), name));
        } else if needed.as_ref().is_none_or(|(v, _)| version(rv) > *v) {
            needed = Some((version(rv), name));
        }
    }
    let (needed, by) = needed.expect("some dependency declares a rust-version");
    assert_eq!(
        ours.len(),
        3,
        "every workspace member declares rust-version"
    );
    for (v, name) in ours {
        assert!(
            v >= needed,
            "{name} declares rust-version {v:?}, but {by} needs {needed:?}: raise \
             [workspace.package] rust-version"
        );
    }
}
