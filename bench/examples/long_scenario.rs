//! The lab on a long scenario: how its reports, `compare` and `sweep` grow with the number of
//! steps, as ratios to the run itself, measured in one process (docs/performance.md, "The lab on
//! long scenarios"). Reporting work that scans the event log once per step is quadratic; a
//! report that stays a small multiple of its run as the steps grow is linear.
//!
//! `cargo run --release -p fsfilter-bench --example long_scenario [STEPS...]` (default: 1500,
//! 3000 and 6000 steps).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "example")]

use std::time::{Duration, Instant};

use fsfilter_lab::scenario::{self, Model};

/// The lab binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A boot-start probe minifilter on C: and `steps` reads of 20 files.
fn long_scenario(steps: usize) -> String {
    let mut text = String::from(
        "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n[[driver]]\nname = \"P\"\n\
         sample = \"probe\"\nmodel = \"minifilter\"\naltitude = \"370000\"\nstart = \"boot\"\n",
    );
    for i in 0..steps {
        text.push_str(&format!(
            "[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"read\"\npath = \"f{}\"\n",
            i % 20
        ));
    }
    text
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let counts = if counts.is_empty() { vec![1500, 3000, 6000] } else { counts };
    println!("steps   run (ms)   text+html / run   compare / 2 runs   sweep / parse+run");
    for steps in counts {
        let text = long_scenario(steps);
        let (s, parsed) = timed(|| scenario::parse("long.toml", &text).unwrap());
        let (r, ran) = timed(|| fsfilter_lab::run::run(&s));
        let ((report, page), reported) =
            timed(|| (fsfilter_lab::text::report(&s, &r), fsfilter_lab::html::report(&s, &r)));
        let last = format!("[{}] io read C:\\f", steps - 1);
        assert!(report.contains(&last) && page.contains(&format!("<td>{}</td>", steps - 1)));
        let (_, runs) = timed(|| {
            for model in [Model::Legacy, Model::Minifilter] {
                let _ = fsfilter_lab::run::run(&s.with_model("P", model));
            }
        });
        let (c, compared) = timed(|| fsfilter_lab::compare::compare(&s, "P").unwrap());
        assert!(c.text.contains(&last), "every step is compared");
        let dir = std::env::temp_dir().join(format!("fsfilter-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("long.toml"), &text).unwrap();
        let (summary, swept) = timed(|| fsfilter_lab::sweep::sweep(&dir, Some(1), false));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(summary.unwrap().csv.contains(&format!("; [{}] P,", steps - 1)));
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "{steps:>5}   {:>8.1}   {:>15.2}   {:>16.2}   {:>17.2}",
            ran.as_secs_f64() * 1e3,
            ratio(reported, ran),
            ratio(compared, runs),
            ratio(swept, parsed + ran),
        );
    }
}
