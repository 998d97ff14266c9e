//! The `syncgate` binary: everything lives in the library; see `cli.rs`.
//!
//! The system allocator, on purpose: mimalloc was measured for issue 13 (docs/performance.md) and
//! saved ~3 % of pass-through CPU but cost ~15 KiB more per idle connection and 17 MiB more at
//! rest, and memory per connection is what bounds how many clients one syncgate can hold.

fn main() -> std::process::ExitCode {
    syncgate::cli::main()
}
