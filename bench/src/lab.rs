//! The lab's workloads: the built-in demonstration and a generated sweep.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The scenario the sweep varies: `lab/scenarios/attach-order.toml` (legacy filters and
/// minifilters loaded at boot and later, a FAT volume mounted after everyone).
const ATTACH_ORDER: &str = include_str!("../../lab/scenarios/attach-order.toml");

/// Runs the demonstration as `fsfilter` with no arguments does and returns its text.
pub fn demonstration() -> String {
    fsfilter_lab::demo::run().text
}

/// A folder of `n` scenarios, attach-order with the late minifilter's altitude at `380000 + i`,
/// for [`Sweep::run`]: written by [`Sweep::new`], so that the timed runs only read it, and
/// removed when the sweep is dropped.
pub struct Sweep {
    dir: PathBuf,
    n: usize,
}

impl Sweep {
    /// Writes the folder of `n` scenarios (in the temporary folder, named after this process).
    ///
    /// # Panics
    /// When the folder cannot be written.
    pub fn new(n: usize) -> Sweep {
        static SWEEPS: AtomicUsize = AtomicUsize::new(0);
        let which = SWEEPS.fetch_add(1, Ordering::Relaxed);
        let name = format!("fsfilter-bench-sweep-{}-{which}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sweep folder");
        // Removed from here on, whatever fails below.
        let sweep = Sweep { dir, n };
        for i in 0..n {
            let text = ATTACH_ORDER
                .replace("altitude = \"385000\"", &format!("altitude = \"{}\"", 380_000 + i))
                .replace("name = \"attach-order\"", &format!("name = \"attach-order-{i}\""));
            std::fs::write(sweep.dir.join(format!("s{i:04}.toml")), text).expect("scenario file");
        }
        sweep
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sweeps the folder on every CPU, as `fsfilter sweep` does, and returns how many scenarios
    /// ran cleanly.
    ///
    /// # Panics
    /// When a scenario is bad or has verifier findings.
    pub fn run(&self) -> usize {
        let summary = fsfilter_lab::sweep::sweep(&self.dir, None, false).expect("sweep");
        assert_eq!(summary.bad + summary.with_findings, 0, "{}", summary.totals());
        assert_eq!(summary.rows.len(), self.n, "one row per scenario");
        summary.rows.len()
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a sweep of `n` generated scenarios on every CPU once ([`Sweep`]) and returns how many
/// ran cleanly; its folder is removed.
///
/// # Panics
/// When a scenario is bad or has verifier findings.
pub fn sweep(n: usize) -> usize {
    Sweep::new(n).run()
}
