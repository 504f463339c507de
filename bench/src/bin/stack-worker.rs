//! `stack-worker <kind> <depth> [<workload>] [--no-callback-events] [--pin]`: one stack of the benchmarks, timed in the lab's build
//! (`fsfilter_bench::worker`, which documents the protocol).

use std::process::ExitCode;

use fsfilter_bench::worker;

/// The lab binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec = match worker::Spec::parse(&args) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("stack-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if spec.pin {
        // Where the system allows it; otherwise the worker runs where it is put.
        if let Some(core) = fsfilter_bench::paired::last_core() {
            let _ = core_affinity::set_for_current(core);
        }
    }
    match worker::serve(&spec, std::io::stdin().lock(), std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
