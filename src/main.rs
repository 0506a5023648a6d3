//! The `kiln` command: a thin layer over the `kiln` library.

#![deny(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
