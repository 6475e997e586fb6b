//! The docs say only what the code does: every file path the README, the architecture page and the runbook
//! name (in backticks, from the repository's root) exists.

use std::path::Path;

const DOCS: &[&str] = &["README.md", "docs/architecture.md", "docs/operations.md", "docs/apalis-redis.md"];
const ROOTS: &[&str] =
    &["crates/", "deploy/", "docs/", "scripts/", "bench/", "migrations/", "locust/", ".ci/"];

#[test]
fn every_path_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut missing = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for quoted in text.split('`').skip(1).step_by(2) {
            // A path, possibly with a `{a,b}` list of files in one folder, or followed by words.
            let path = quoted.split_whitespace().next().unwrap_or("").trim_end_matches([',', ':', ')']);
            if !ROOTS.iter().any(|r| path.starts_with(r)) || path.contains('*') || path.contains('<') {
                continue;
            }
            let expanded: Vec<String> = match (path.find('{'), path.find('}')) {
                (Some(open), Some(close)) if open < close => path[open + 1..close]
                    .split(',')
                    .map(|part| format!("{}{part}{}", &path[..open], &path[close + 1..]))
                    .collect(),
                _ => vec![path.to_string()],
            };
            for path in expanded {
                if !root.join(&path).exists() {
                    missing.push(format!("{doc}: {path}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "the docs name paths that do not exist:\n{}", missing.join("\n"));
}
