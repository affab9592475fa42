//! Every YAML example in README.md and docs/ is a file under docs/examples/, and every such file
//! is applied by the demo or an end-to-end test, so documentation cannot drift from what works.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

fn yaml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml")
                || line.trim_start().starts_with("```yml") =>
            {
                current = Some(String::new())
            }
            Some(b) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn examples() -> Vec<(String, String)> {
    let dir = repo().join("docs/examples");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("docs/examples exists")
        .flatten()
        .map(|e| {
            let p = e.path();
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_yaml_block_in_the_docs_is_an_example_file() {
    let mut files = vec![repo().join("README.md")];
    markdown_files(&repo().join("docs"), &mut files);
    markdown_files(&repo().join("chart"), &mut files);
    let examples = examples();
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for block in yaml_blocks(&text) {
            assert!(
                examples.iter().any(|(_, content)| *content == block),
                "a YAML block in {} is not byte-equal to any file in docs/examples/:\n{block}",
                f.display()
            );
            checked += 1;
        }
    }
    println!("{checked} YAML blocks checked");
}

#[test]
fn every_example_file_is_applied_by_a_test_or_the_demo() {
    let mut appliers =
        std::fs::read_to_string(repo().join("tests/harness/demo.sh")).unwrap_or_default();
    for dir in ["tests/e2e/tests", "tests/e2e/src"] {
        let Ok(entries) = std::fs::read_dir(repo().join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().file_name().is_some_and(|n| n != "docs_yaml.rs") {
                appliers.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    let examples = examples();
    assert!(!examples.is_empty());
    for (name, _) in examples {
        assert!(
            appliers.contains(&format!("docs/examples/{name}")),
            "docs/examples/{name} is applied by no test and not by the demo"
        );
    }
}
