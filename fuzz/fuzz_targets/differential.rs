#![no_main]
//! See `syncgate::fuzzing::differential` for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| syncgate::fuzzing::differential(data));
