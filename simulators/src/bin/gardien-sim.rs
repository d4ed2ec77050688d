//! `gardien-sim <config.toml>`: runs the simulated devices a file describes.
//! `gardien-sim broker --listen 127.0.0.1:1883`: runs only an MQTT broker, until killed
//! (tests kill and restart it to see devices come back).
//!
//! stdout carries JSON only: one line per device at start (where to reach it), then
//! one answer per command read on stdin. Logs go to stderr (`RUST_LOG=debug`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gardien_simulators::broker::{BrokerOptions, EmbeddedBroker};
use gardien_simulators::config::{start, SimConfig};
use gardien_simulators::control::{run, Next};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Simulated lock controllers (PX-2, KL-8, esp-rfid) and meter gateways for gardien.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = gardien_simulators::control::HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// TOML file describing the devices (see simulators/examples/demo.toml).
    #[arg(required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs an MQTT broker in the foreground; prints {"broker":"host:port"} when it listens.
    Broker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
        #[arg(long, requires = "password")]
        username: Option<String>,
        #[arg(long, requires = "username")]
        password: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let result = match (&args.command, &args.config) {
        (
            Some(Command::Broker {
                listen,
                username,
                password,
            }),
            _,
        ) => {
            let credentials = username.clone().zip(password.clone());
            broker(*listen, credentials).await
        }
        (None, Some(config)) => serve(config).await,
        (None, None) => Err("give a configuration file, or `broker`".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gardien-sim: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs until the process is killed or interrupted.
async fn broker(listen: SocketAddr, credentials: Option<(String, String)>) -> Result<(), String> {
    let options = BrokerOptions {
        listen,
        credentials,
        ..BrokerOptions::default()
    };
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&options))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!("{}", json!({ "broker": broker.addr().to_string() }));
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
}

async fn serve(path: &PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: SimConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let sim = start(&config).await.map_err(|e| e.to_string())?;
    if let Some(addr) = sim.broker_addr() {
        println!("{}", json!({ "broker": addr.to_string() }));
    }
    for endpoint in sim.endpoints() {
        println!(
            "{}",
            serde_json::to_string(endpoint).map_err(|e| e.to_string())?
        );
    }
    for endpoint in sim.esprfid_endpoints() {
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
