//! The schemas under `crds/schemas/` are the ones generated from the types.
//! Regenerate with `UPDATE_SCHEMAS=1 cargo test -p crds --test schemas`.

use std::path::Path;

#[test]
fn schema_files_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for kind in crds::KINDS {
        let path = dir.join(format!("{}.yaml", kind.plural));
        let generated = format!(
            "# Generated from the Rust types by `UPDATE_SCHEMAS=1 cargo test -p crds --test schemas`; do not edit.\n{}",
            yaml_serde::to_string(&kind.schema().clone().to_value()).unwrap()
        );
        if update {
            std::fs::write(&path, &generated).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale schema files {stale:?}: run UPDATE_SCHEMAS=1 cargo test -p crds --test schemas"
    );
}
