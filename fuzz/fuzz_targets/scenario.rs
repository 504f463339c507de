//! Scenario files: `fsfilter_lab::scenario::parse` on any bytes never panics, names the file in
//! every error, and a small scenario that parses runs in the simulator (the checks are in
//! `fsfilter_lab::fuzzing::scenario`, replayed on stable by lab/tests/fuzz_corpus.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fsfilter_lab::fuzzing::scenario(data);
});
