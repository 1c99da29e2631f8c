//! ARCHITECTURE.md names every crate of the workspace: a crate added
//! without a word there fails this test.

use std::path::Path;

#[test]
fn architecture_names_every_workspace_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the root");
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().expect("workspace members");
    assert!(!members.is_empty());
    for m in members {
        let folder = m.as_str().unwrap();
        let crate_manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(root.join(folder).join("Cargo.toml")).unwrap())
                .unwrap();
        let name = crate_manifest["package"]["name"].as_str().unwrap();
        assert!(
            text.contains(&format!("`{folder}/`")) && text.contains(&format!("`{name}`")),
            "ARCHITECTURE.md does not name the crate {name} (folder {folder}/): add it to the table"
        );
    }
}
