//! `stack-worker <kind> <depth>`: one stack of the throughput benchmark, timed in the lab's build
//! (`fsfilter_bench::worker`, which documents the protocol).

use std::process::ExitCode;

use fsfilter_bench::worker;

/// The lab binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stack = match &args[..] {
        [kind, depth] => depth.parse().ok().and_then(|d| worker::stack(kind, d)),
        _ => None,
    };
    let Some(stack) = stack else {
        eprintln!("usage: stack-worker <minifilter|legacy|mixed> <depth>");
        return ExitCode::from(2);
    };
    match worker::serve(&stack, std::io::stdin().lock(), std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
