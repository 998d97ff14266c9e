#![no_main]
//! See `syncgate::fuzzing::batch_parser` for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| syncgate::fuzzing::batch_parser(data));
