//! `gardien-sim <config.toml>`: runs the simulated devices a file describes.
//!
//! stdout carries JSON only: one line per device at start (where to reach it), then
//! one answer per command read on stdin. Logs go to stderr (`RUST_LOG=debug`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gardien_simulators::config::{start, SimConfig};
use gardien_simulators::control::{run, Next};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Simulated lock controllers (PX-2, KL-8) for gardien.
#[derive(Debug, Parser)]
#[command(version, after_help = gardien_simulators::control::HELP)]
struct Args {
    /// TOML file describing the devices (see simulators/examples/demo.toml).
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match serve(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gardien-sim: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let config: SimConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let sim = start(&config).await.map_err(|e| e.to_string())?;
    for endpoint in sim.endpoints() {
        println!(
            "{}",
            serde_json::to_string(endpoint).map_err(|e| e.to_string())?
        );
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // End of input stops the simulator like `quit`.
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        if line.trim().is_empty() {
            continue;
        }
        let (answer, next) = run(&sim, &line);
        println!("{answer}");
        if next == Next::Quit {
            break;
        }
    }
    Ok(())
}
