//! `stackway`: the command line without the Python interpreter. A command
//! that mounts a Python app runs as `stackway-python`, beside it.

fn main() -> std::process::ExitCode {
    stackway_cli::main(None)
}
