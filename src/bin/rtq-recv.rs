//! `rtq-recv`: receives rtq sessions and plays their frames. See `rtq-recv --help` and README.md.

fn main() -> std::process::ExitCode {
    rtq::cli::recv::main()
}
