//! What the integration tests of several crates need to judge the market with code nobody
//! here wrote: npm packages and PyPI packages installed once into the workspace's target
//! folder (`target/outside-clients/NAME`), and the Chromium the browser tests drive.
//!
//! An installation is made in a folder of the process's own and renamed into place when
//! complete, so concurrent tests neither see half of one nor race; a later run finds it and
//! installs nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// npm `packages` (with versions, e.g. `graphql@16.9.0`) in a folder named `name`; returns
/// its `node_modules`.
pub fn npm_modules(name: &str, packages: &[&str]) -> PathBuf {
    installed(name, "node_modules", |scratch| {
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(scratch)
            .args(packages)
            .status()
            .expect("npm runs (Node.js and npm are needed)")
    })
}

/// A Python virtual environment named `name` with `packages` from PyPI; returns its
/// `python`. Tools that pin old libraries keep them to themselves this way.
pub fn python_env(name: &str, packages: &[&str]) -> PathBuf {
    installed(name, "bin/python", |scratch| {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(scratch)
            .status()
            .expect("python3 runs");
        if !made.success() {
            return made;
        }
        Command::new(scratch.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .expect("pip runs")
    })
}

/// Chromium for the browser tests: `CHROMIUM`, or where Debian and others install it.
pub fn chromium() -> String {
    [
        std::env::var("CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".to_owned(),
        "/usr/bin/chromium-browser".to_owned(),
        "/usr/bin/google-chrome".to_owned(),
    ]
    .into_iter()
    .find(|c| !c.is_empty() && Path::new(c).exists())
    .expect(
        "the browser tests need Chromium: `apt-get install chromium` (scripts/test installs \
         it) or set CHROMIUM=/path/to/chrome",
    )
}

fn installed(name: &str, inside: &str, install: impl FnOnce(&Path) -> ExitStatus) -> PathBuf {
    // The workspace's target folder, which `cargo clean` clears with the rest.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/outside-clients")
        .join(name);
    if root.join(inside).exists() {
        return root.join(inside);
    }
    let scratch = root.with_extension(format!("installing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("a scratch folder in target/");
    assert!(install(&scratch).success(), "installing {name} failed");
    if std::fs::rename(&scratch, &root).is_err() {
        // Another test installed it first.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    root.join(inside)
}
