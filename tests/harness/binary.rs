//! Where the `kassa` binary under test comes from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static KASSA_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The `kassa` binary: `$KASSA_BIN` if set, else built once per test process (blocking; call it
/// from `spawn_blocking` inside async code).
///
/// The build goes to the target dir this test binary was built into (`<target>/<profile>/deps/
/// <test>` → `<target>/<profile>/kassa`), which also honours `CARGO_TARGET_DIR`.
pub fn kassa_bin() -> &'static Path {
    KASSA_BIN.get_or_init(|| match std::env::var_os("KASSA_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "KASSA_BIN={} is not a file", path.display());
            path
        }
        None => build(),
    })
}

/// `<target>/<profile>`, from `<target>/<profile>/deps/<this test binary>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| {
            panic!(
                "test binary {} is not in <target>/<profile>/deps",
                exe.display()
            )
        })
        .to_path_buf()
}

fn build() -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent target dir", profile_dir.display()));
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", "kassa", "--bin", "kassa", "--target-dir"])
        .arg(target_dir);
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {cargo:?} build failed: {error}"));
    assert!(
        output.status.success(),
        "`cargo build -p kassa --bin kassa` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join(format!("kassa{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "cargo built kassa but {} does not exist",
        binary.display()
    );
    binary
}
