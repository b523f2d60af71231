//! The man pages under man/ are generated from the clap definitions; this test fails when
//! they are stale. Regenerate with `SQLBAK_UPDATE_MAN=1 cargo test --test man`.

use clap::CommandFactory;
use std::path::PathBuf;

/// The date printed in the pages' footer; bump it with the version.
const MAN_DATE: &str = "2026-11-26";

fn pages() -> Vec<(String, Vec<u8>)> {
    let root = sqlbak::cli::Cli::command();
    let mut pages = Vec::new();
    let mut render = |name: String, cmd: clap::Command| {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone()))
            .date(MAN_DATE)
            .source(format!("sqlbak {}", env!("CARGO_PKG_VERSION")))
            .manual("sqlbak manual")
            .render(&mut buf)
            .unwrap();
        // clap_mangen separates a flag's help from its value list with `.br` around a blank
        // line, which mandoc flags; one `.sp` says the same.
        let text = String::from_utf8(buf)
            .unwrap()
            .replace("\n.br\n\n.br\n", "\n.sp\n");
        pages.push((format!("{name}.1"), text.into_bytes()));
    };
    for sub in root.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        render(format!("sqlbak-{}", sub.get_name()), sub.clone());
    }
    render("sqlbak".into(), root);
    pages
}

#[test]
fn man_pages_are_fresh() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("SQLBAK_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for (file, content) in pages() {
        let path = dir.join(&file);
        if update {
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "stale man pages {stale:?}: run `SQLBAK_UPDATE_MAN=1 cargo test --test man` and commit man/"
    );
}

#[test]
fn man_pages_pass_mandoc_lint() {
    // Lint freshly generated pages (man_pages_are_fresh compares them with man/), so this
    // test never reads a file the other one is rewriting.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (file, content) in pages() {
        std::fs::write(dir.join(&file), content).unwrap();
        let out = std::process::Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(dir.join(&file))
            .output()
            .expect("mandoc must be installed (apt-get install mandoc)");
        assert!(
            out.status.success(),
            "mandoc -T lint {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
