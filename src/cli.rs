//! The command line: `gardien serve | migrate | demo | collect | user add | residence add |
//! import keys | import readings`.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::roles::Role;
use crate::domain::text;
use crate::http::{self, AppState};
use crate::storage::audit::Actor;
use crate::storage::auth::Membership;
use crate::storage::residences::ResidenceInput;
use crate::storage::Store;

#[derive(Debug, Parser)]
#[command(
    name = "gardien",
    version,
    about = "Keys, locks and meters of residential co-ownerships"
)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./gardien.toml if present.
    #[arg(long, env = "GARDIEN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the API server.
    Serve,
    /// Applies database migrations and exits.
    Migrate,
    /// Runs a demo: a seeded residence on a local SQLite file, served on loopback.
    Demo {
        /// Where the demo database lives.
        #[arg(long, default_value = "gardien-demo")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Manages accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages residences.
    #[command(subcommand)]
    Residence(ResidenceCommand),
    /// Imports files.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Collects every meter gateway once, now (the nightly collection, by hand).
    Collect,
    /// Runs the embedded MQTT broker alone, in the foreground, until stopped: a broker
    /// for a laptop set-up, or a separate process for tests that restart it.
    MqttBroker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
        /// Username clients must give (with GARDIEN_MQTT_BROKER_PASSWORD).
        #[arg(long)]
        username: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates an account. The password is read from GARDIEN_PASSWORD or, with
    /// --password-stdin, from the first line of standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Platform administrator: creates residences and accounts.
        #[arg(long)]
        admin: bool,
        /// Gives the account a role in this residence.
        #[arg(long, requires = "role")]
        residence: Option<i64>,
        #[arg(long, value_parser = parse_role, requires = "residence")]
        role: Option<Role>,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ResidenceCommand {
    /// Creates a residence and prints its id.
    Add {
        name: String,
        #[arg(long, default_value = "")]
        address: String,
    },
    /// Lists residences.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Imports keys from a CSV file (`;` or `,`, with a header line).
    Keys {
        file: PathBuf,
        #[arg(long)]
        residence: i64,
        /// Checks every line and reports, without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Imports meter readings from a provider's CSV file: a header naming at least the
    /// meter id, the date and the index; `;` or `,`; decimal comma or point.
    Readings {
        file: PathBuf,
        #[arg(long)]
        residence: i64,
        /// Checks every line and reports, without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "council" => Ok(Role::Council),
        "syndic" => Ok(Role::Syndic),
        other => Err(format!("{other}: the command line gives council or syndic roles; residents and providers are added through the API with their person or company")),
    }
}

/// Runs the command; the process exit code says whether it worked.
pub fn main(cli: Cli) -> ExitCode {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gardien: {err:#}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gardien: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gardien: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            let store = open(&config.database_url).await?;
            serve(store, config).await?;
        }
        Command::Migrate => {
            open(&config.database_url).await?;
            println!("database {} is up to date", config.database_url);
        }
        Command::Demo { data_dir, listen } => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let database = data_dir.join("demo.db");
            let config = Config {
                database_url: database.display().to_string(),
                listen,
                ..config
            };
            let store = open(&config.database_url).await?;
            let seeded = crate::demo::seed(&store).await?;
            // The simulated controllers live in this process, on loopback ports.
            let devices = crate::demo::start_devices(&store, &seeded).await?;
            // MQTT through an embedded broker: an esp-rfid door, wireless meters.
            let mqtt = crate::demo::mqtt::config(seeded.residence_id)?;
            let mqtt_devices = crate::demo::mqtt::start(&store, seeded.residence_id, &mqtt).await?;
            println!(
                "{}",
                crate::demo::welcome(&seeded, listen, &database, &devices)
            );
            println!("{}", crate::demo::mqtt::welcome(&mqtt_devices));
            let config = Config {
                sync: crate::sync::SyncConfig {
                    enabled: true,
                    ..config.sync
                },
                mqtt,
                ..config
            };
            // A first collection now, so that today's indexes show without waiting
            // for the night.
            let first = {
                let (store, options) = (
                    store.clone(),
                    config
                        .collection
                        .options(crate::sync::instance_owner(&config.sync)),
                );
                tokio::spawn(async move {
                    if let Err(err) =
                        crate::metering::collect::collect(&store, None, &options, |_, _| {}).await
                    {
                        tracing::warn!(%err, "demo: first collection failed");
                    }
                })
            };
            serve(store, config).await?;
            first.abort();
            mqtt_devices.stop();
            devices.stop().await;
        }
        Command::User(UserCommand::Add {
            email,
            name,
            admin,
            residence,
            role,
            password_stdin,
        }) => {
            let password = read_password(password_stdin)?;
            let store = open(&config.database_url).await?;
            let email = text::email("email", &email)?;
            let hash = crate::auth::hash_new_password(password).await?;
            let actor = Actor::system("cli");
            let mut tx = store.write().await?;
            let user = tx.insert_user(&actor, &email, &name, &hash, admin).await?;
            if let (Some(residence_id), Some(role)) = (residence, role) {
                tx.residence(residence_id).await?;
                let membership = Membership {
                    user_id: user.id,
                    residence_id,
                    role,
                    person_id: None,
                    provider_id: None,
                };
                tx.set_membership(&actor, &membership).await?;
            }
            tx.commit().await?;
            println!("user {} created (id {})", user.email, user.id);
        }
        Command::Residence(ResidenceCommand::Add { name, address }) => {
            let store = open(&config.database_url).await?;
            let input = ResidenceInput { name, address }.validated()?;
            let mut tx = store.write().await?;
            let residence = tx.insert_residence(&Actor::system("cli"), &input).await?;
            tx.commit().await?;
            println!("{}", residence.id);
        }
        Command::Residence(ResidenceCommand::List) => {
            let store = open(&config.database_url).await?;
            for residence in store.read().await?.residences(None).await? {
                println!(
                    "{}\t{}\t{}",
                    residence.id, residence.name, residence.address
                );
            }
        }
        Command::Import(ImportCommand::Readings {
            file,
            residence,
            dry_run,
        }) => {
            let store = open(&config.database_url).await?;
            return import_readings(&store, residence, &file, dry_run).await;
        }
        Command::Collect => {
            let store = open(&config.database_url).await?;
            return collect_now(&store, &config).await;
        }
        Command::MqttBroker { listen, username } => {
            let credentials = match username {
                Some(username) => Some((
                    username,
                    std::env::var("GARDIEN_MQTT_BROKER_PASSWORD")
                        .context("--username needs GARDIEN_MQTT_BROKER_PASSWORD")?,
                )),
                None => None,
            };
            let broker = gardien_simulators::broker::EmbeddedBroker::start(
                &gardien_simulators::broker::BrokerOptions {
                    listen,
                    credentials,
                    ..Default::default()
                },
            )?;
            // One line on stdout once listening, for whoever started us.
            println!(
                "{}",
                serde_json::json!({ "broker": broker.addr().to_string() })
            );
            tokio::signal::ctrl_c().await?;
        }
        Command::Import(ImportCommand::Keys {
            file,
            residence,
            dry_run,
        }) => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let store = open(&config.database_url).await?;
            return import_keys(&store, residence, &data, dry_run).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn open(url: &str) -> anyhow::Result<Store> {
    Store::open(url)
        .await
        .with_context(|| format!("opening database {url}"))
}

async fn serve(store: Store, config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "gardien API listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mqtt = start_mqtt(&store, &config).await?;
    let engine = config.sync.enabled.then(|| {
        let mut stopped = stopped.clone();
        let mut engine = crate::sync::Engine::new(store.clone(), config.sync.clone());
        if let Some(mqtt) = &mqtt {
            engine = engine.with_mqtt(mqtt.channel().clone());
        }
        tokio::spawn(engine.run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    });
    let nightly = config.collection.enabled.then(|| {
        let mut stopped = stopped.clone();
        tokio::spawn(crate::metering::schedule::run(
            store.clone(),
            config.collection.clone(),
            crate::sync::instance_owner(&config.sync),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    });
    let state = AppState {
        store: store.clone(),
        config: Arc::new(config),
    };
    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    };
    http::serve(listener, state, shutdown).await?;
    if let Some(engine) = engine {
        let _ = engine.await;
    }
    if let Some(nightly) = nightly {
        // A collection under way is not waited for: its run stays open, marked unfinished.
        nightly.abort();
    }
    if let Some(mqtt) = mqtt {
        mqtt.stop().await;
    }
    store.close().await;
    Ok(())
}

/// Starts the embedded broker when configured, then the connection to the broker.
pub async fn start_mqtt(
    store: &Store,
    config: &Config,
) -> anyhow::Result<Option<crate::mqtt::Mqtt>> {
    let mqtt = &config.mqtt;
    if !mqtt.enabled {
        return Ok(None);
    }
    if mqtt.embedded_broker {
        let listen = format!("{}:{}", mqtt.host, mqtt.port)
            .parse()
            .with_context(|| {
                format!(
                    "mqtt.host {:?} must be an IP address for the embedded broker",
                    mqtt.host
                )
            })?;
        let credentials = mqtt.username.clone().zip(mqtt.password.clone());
        gardien_simulators::broker::EmbeddedBroker::start(
            &gardien_simulators::broker::BrokerOptions {
                listen,
                credentials,
                ..Default::default()
            },
        )?;
    }
    let instance = crate::sync::instance_owner(&config.sync);
    Ok(Some(
        crate::mqtt::Mqtt::start(store.clone(), mqtt, &instance).await?,
    ))
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    std::env::var("GARDIEN_PASSWORD")
        .map_err(|_| anyhow::anyhow!("no password: set GARDIEN_PASSWORD or pass --password-stdin"))
}

/// Lines of a file above which the import shows a progress bar.
const PROGRESS_BAR_FROM: usize = 500;

async fn import_keys(
    store: &Store,
    residence: i64,
    data: &[u8],
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let lines = bytecount_lines(data);
    let bar = if lines > PROGRESS_BAR_FROM && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(lines as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} lignes ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let progress = |done: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    };
    let report = crate::import::keys::import_keys(
        store,
        &Actor::system("import"),
        residence,
        data,
        dry_run,
        &progress,
    )
    .await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    for rejected in &report.rejected {
        println!("ligne {} refusée : {}", rejected.line, rejected.reason);
    }
    println!(
        "{} lignes lues : {} clés importées, {} déjà enregistrées, {} refusées, {} détenteurs créés{}",
        report.lines,
        report.imported,
        report.already_present,
        report.rejected.len(),
        report.people_created,
        if report.dry_run { " (essai : rien n'a été enregistré)" } else { "" }
    );
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `gardien import readings`: streams the file, with a progress bar on a terminal.
/// Exit code 3 when lines were refused.
async fn import_readings(
    store: &Store,
    residence: i64,
    path: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or_default();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} lignes ({per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |done: u64| bar.set_position(done);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    tracing::debug!(bytes = size, file = %name, "importing readings");
    let report = crate::import::readings::import_readings(
        store,
        residence,
        std::io::BufReader::new(file),
        &name,
        dry_run,
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    for rejected in &report.rejected {
        println!("ligne {} refusée : {}", rejected.line, rejected.reason);
    }
    if report.rejected_total > report.rejected.len() as u64 {
        println!(
            "… et {} autres lignes refusées",
            report.rejected_total - report.rejected.len() as u64
        );
    }
    if report.conflicts > 0 {
        println!(
            "{} relevés contredisent un relevé déjà enregistré (conservés à part, rien n'est écrasé) : lignes {:?}",
            report.conflicts, report.conflict_lines
        );
    }
    println!(
        "{} lignes lues : {} relevés enregistrés, {} déjà connus, {} en conflit, {} refusées{}",
        report.lines,
        report.stored,
        report.duplicates,
        report.conflicts,
        report.rejected_total,
        if report.dry_run {
            " (essai : rien n'a été enregistré)"
        } else {
            ""
        }
    );
    Ok(if report.rejected_total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn bytecount_lines(data: &[u8]) -> usize {
    data.iter().filter(|b| **b == b'\n').count()
}

/// `gardien collect`: one collection of every gateway, with a progress bar on a
/// terminal and a line per gateway. Exit code 3 when a gateway failed or meters are
/// missing.
async fn collect_now(store: &Store, config: &Config) -> anyhow::Result<ExitCode> {
    let gateways = store.read().await?.collectable_gateways().await?.len();
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = indicatif::ProgressBar::new(gateways as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} passerelles ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let lines = bar.clone();
    let options = config
        .collection
        .options(crate::sync::instance_owner(&config.sync));
    let run = crate::metering::collect::collect(store, None, &options, move |gateway, part| {
        let outcome = match &part.error {
            Some(error) => format!("échec : {error}"),
            None => format!(
                "{} relevés sur {} ({} nouveaux, {} déjà connus, {} manquants, {} refusés, {} conflits), {} requêtes",
                part.meters_read,
                part.meters_expected,
                part.readings_new,
                part.readings_duplicate,
                part.meters_missing,
                part.rejected,
                part.conflicts,
                part.requests
            ),
        };
        let line = format!("{} : {outcome}", gateway.name);
        if terminal {
            lines.println(line);
        } else {
            println!("{line}");
        }
        lines.inc(1);
    })
    .await?;
    bar.finish_and_clear();
    let Some(run) = run else {
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "collecte n°{} : {} compteurs relevés sur {}, {} manquants, {} passerelle(s) en échec sur {}",
        run.id, run.meters_read, run.meters_expected, run.meters_missing, run.gateways_failed, run.gateways
    );
    Ok(if run.gateways_failed > 0 || run.meters_missing > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
