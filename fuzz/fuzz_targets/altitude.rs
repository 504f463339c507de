//! Altitudes: `fsfilter::Altitude` parsing never panics and its order is Windows' (the checks are
//! in `fsfilter_lab::fuzzing::altitude`, replayed on stable by lab/tests/fuzz_corpus.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fsfilter_lab::fuzzing::altitude(data);
});
