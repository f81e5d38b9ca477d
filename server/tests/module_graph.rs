//! The modules of the server and of the client core import each other in no circle: a module
//! never imports, directly or through others, a module that imports it. The check is
//! `scripts/module-graph.sh --check`, which prints the graph's cycles and the imports that make
//! them.

use std::path::Path;
use std::process::Command;

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/module-graph.sh"))
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("could not run scripts/module-graph.sh: {e}"));
    assert!(
        out.status.success(),
        "module cycles:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
