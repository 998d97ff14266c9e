#![no_main]
//! See `syncgate::fuzzing::body_reader` for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| syncgate::fuzzing::body_reader(data));
