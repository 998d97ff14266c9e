//! The `syncgate` binary: everything lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    syncgate::cli::main()
}
