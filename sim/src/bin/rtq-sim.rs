//! `rtq-sim`: the network simulator. See `rtq-sim --help` and README.md.

fn main() -> std::process::ExitCode {
    rtq_sim::cli::main()
}
