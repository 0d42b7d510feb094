//! `rtq-send`: streams live frames to an rtq receiver. See `rtq-send --help` and README.md.

fn main() -> std::process::ExitCode {
    rtq::cli::send::main()
}
