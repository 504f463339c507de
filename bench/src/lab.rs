//! The lab's workloads: the built-in demonstration and a generated sweep.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The scenario the sweep varies: `lab/scenarios/attach-order.toml` (legacy filters and
/// minifilters loaded at boot and later, a FAT volume mounted after everyone).
const ATTACH_ORDER: &str = include_str!("../../lab/scenarios/attach-order.toml");

/// Runs the demonstration as `fsfilter` with no arguments does and returns its text.
pub fn demonstration() -> String {
    fsfilter_lab::demo::run().text
}

/// A folder with `n` scenarios: attach-order with the late minifilter's altitude at
/// `380000 + i`, written once per process.
fn sweep_folder(n: usize) -> PathBuf {
    static FOLDER: OnceLock<(usize, PathBuf)> = OnceLock::new();
    let (count, dir) = FOLDER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fsfilter-bench-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sweep folder");
        for i in 0..n {
            let text = ATTACH_ORDER
                .replace("altitude = \"385000\"", &format!("altitude = \"{}\"", 380_000 + i))
                .replace("name = \"attach-order\"", &format!("name = \"attach-order-{i}\""));
            std::fs::write(dir.join(format!("s{i:04}.toml")), text).expect("scenario file");
        }
        (n, dir)
    });
    assert_eq!(*count, n, "one sweep size per process");
    dir.clone()
}

/// Runs a sweep of `n` generated scenarios on every CPU and returns how many ran cleanly.
///
/// # Panics
/// When a scenario is bad or has verifier findings.
pub fn sweep(n: usize) -> usize {
    let summary = fsfilter_lab::sweep::sweep(&sweep_folder(n), None, false).expect("sweep");
    assert_eq!(summary.bad + summary.with_findings, 0, "{}", summary.totals());
    summary.rows.len()
}
