use clap::Parser;

fn main() -> std::process::ExitCode {
    gardien::cli::main(gardien::cli::Cli::parse())
}
