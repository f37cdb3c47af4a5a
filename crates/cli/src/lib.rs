//! The `chaperone` command line (SPEC §1). `main` is a one-liner calling [`main`];
//! every command is a thin adapter over a library crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod admin_cmd;
mod demo;
mod policies_embedded;

#[derive(Parser)]
#[command(
    name = "chaperone",
    version,
    about = "Privileged access management for AI agents: a sidecar that decides every call."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (RUST_LOG syntax); overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run(ConfigArg),
    /// Validate the config and compile the policies.
    Check(ConfigArg),
    /// Policy authoring tools.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Development helpers.
    #[command(subcommand)]
    Dev(DevCmd),
    /// Run the self-contained local demo (dev certs, example policies, echo tool API, sidecar, scripted agent).
    Demo(DemoArgs),
    /// Operator CLI over the admin API.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCmd),
    /// Print the JWKS of the configured jwt credentials.
    Jwks(ConfigArg),
    /// Run the Kubernetes mutating admission webhook.
    Injector(ConfigArg),
    /// Probe a running sidecar's admin API (exit 0 healthy/ready, 1 not): for exec probes,
    /// so the admin API can stay on loopback.
    Health {
        /// Admin API base URL.
        #[arg(long = "admin", default_value = "http://127.0.0.1:15000")]
        admin: String,
        /// Check readiness (`/readyz`) instead of liveness (`/healthz`).
        #[arg(long)]
        ready: bool,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// Path to the config file.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Run every `test_*` rule in the given directories.
    Test {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// List passing tests too.
        #[arg(long, short)]
        verbose: bool,
        /// Only run tests whose `data.<pkg>.<rule>` matches this regex.
        #[arg(long)]
        run: Option<String>,
    },
    /// Print the decision the sidecar would compute for an input document.
    Eval {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        input: PathBuf,
        /// Show which rules contributed.
        #[arg(long)]
        explain: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain of one or more (rotated, in order) audit files.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a readable timeline of one session.
    Show {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        session: String,
    },
}

#[derive(Subcommand)]
enum DevCmd {
    /// Make a dev CA, a sidecar server cert and agent SVIDs.
    Certs {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "dev.chaperone.local")]
        trust_domain: String,
        /// Agent SPIFFE IDs (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// Keep the generated files (certs, config, audit log) in this directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn init_logging(format: LogFormat, level: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Builds the tokio runtime. A multi-thread runtime takes its worker count from
/// `CHAPERONE_WORKER_THREADS` (a positive integer; unset means one per core; `1` builds
/// the current-thread scheduler, which does the same job cheaper); an invalid value is
/// an error rather than a silent default.
fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        match std::env::var("CHAPERONE_WORKER_THREADS") {
            Ok(v) => match v.trim().parse::<usize>() {
                // One worker: the current-thread scheduler does the same job without the
                // work-stealing machinery (no cross-thread wake-ups, no shared queues).
                Ok(1) => {
                    return tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                }
                Ok(n) if n >= 2 => {
                    b.worker_threads(n);
                }
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("CHAPERONE_WORKER_THREADS must be a positive integer, got {v:?}"),
                    ))
                }
            },
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "CHAPERONE_WORKER_THREADS is not valid UTF-8",
                ))
            }
        }
        b.enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

/// Exit codes: 0 ok, 1 runtime or check failure, 2 usage error.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let default_level = match &cli.command {
        Command::Run(_) | Command::Injector(_) => "info",
        Command::Demo(_) => "warn",
        _ => "warn",
    };
    init_logging(cli.log_format, cli.log_level.as_deref(), default_level);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<chaperone_config::Config, String> {
    chaperone_config::load(path).map_err(|e| e.to_string())
}

fn dispatch(cmd: Command) -> Result<ExitCode, String> {
    match cmd {
        Command::Run(a) => {
            let cfg = load_config(&a.config)?;
            let rt = runtime(true).map_err(|e| e.to_string())?;
            rt.block_on(chaperone_proxy::run(cfg, shutdown_signal()))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) => check(&a.config),
        Command::Policy(PolicyCmd::Test { dirs, verbose, run }) => {
            let filter = match run {
                Some(r) => Some(regex::Regex::new(&r).map_err(|e| format!("--run: {e}"))?),
                None => None,
            };
            let mut out = std::io::stdout();
            let summary = chaperone_policy::run_tests(&dirs, filter.as_ref(), verbose, &mut out)
                .map_err(|e| e.to_string())?;
            Ok(if summary.failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Policy(PolicyCmd::Eval {
            config,
            input,
            explain,
        }) => {
            let cfg = load_config(&config)?;
            let text =
                std::fs::read_to_string(&input).map_err(|e| format!("{}: {e}", input.display()))?;
            let input: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid JSON: {e}", input.display()))?;
            let set = chaperone_policy::PolicySet::load_with(
                &cfg.policy.paths,
                &chaperone_proxy::policy_options(&cfg.policy),
            )
            .map_err(|e| e.to_string())?;
            let report = chaperone_policy::eval_report(&set, &input, explain);
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCmd::Verify { files }) => match chaperone_audit::verify_files(&files) {
            Ok(r) => {
                println!(
                    "OK: {} records in {} file(s), hash chain intact",
                    r.records, r.files
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("BROKEN: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Audit(AuditCmd::Show { files, session }) => {
            let text =
                chaperone_audit::show_session(&files, &session).map_err(|e| e.to_string())?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(DevCmd::Certs {
            out,
            trust_domain,
            ids,
        }) => {
            let certs = chaperone_identity::dev::generate_dev_certs(&out, &trust_domain, &ids)
                .map_err(|e| e.to_string())?;
            println!("{}", certs.describe());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(a) => {
            let rt = runtime(true).map_err(|e| e.to_string())?;
            rt.block_on(demo::run(a.dir)).map(|_| ExitCode::SUCCESS)
        }
        Command::Admin(cmd) => {
            let rt = runtime(false).map_err(|e| e.to_string())?;
            rt.block_on(admin_cmd::run(cmd))
        }
        Command::Jwks(a) => {
            let cfg = load_config(&a.config)?;
            let rt = runtime(false).map_err(|e| e.to_string())?;
            let jwks = rt.block_on(async {
                chaperone_credentials::CredentialManager::new(&cfg.credentials).map(|m| m.jwks())
            });
            let jwks = jwks.map_err(|e| e.to_string())?;
            let ephemeral: Vec<&str> = cfg
                .credentials
                .values()
                .filter_map(|c| match &c.provider {
                    chaperone_config::Provider::Jwt(j) if j.signing_key.is_none() => {
                        Some(c.name.as_str())
                    }
                    _ => None,
                })
                .collect();
            if !ephemeral.is_empty() {
                eprintln!(
                    "warning: jwt credential(s) {} have no signing_key: their keys are generated at start, so this JWKS differs from a running sidecar's (use admin /v1/jwks)",
                    ephemeral.join(", ")
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&jwks).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { admin, ready } => {
            let rt = runtime(false).map_err(|e| e.to_string())?;
            rt.block_on(admin_cmd::health(&admin, ready))
        }
        Command::Injector(a) => {
            let rt = runtime(true).map_err(|e| e.to_string())?;
            rt.block_on(chaperone_injector::run(&a.config))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &std::path::Path) -> Result<ExitCode, String> {
    let cfg = match chaperone_config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{} error(s)", errors.0.len());
            return Ok(ExitCode::from(1));
        }
    };
    let mut failed = false;
    match chaperone_policy::PolicySet::load_with(
        &cfg.policy.paths,
        &chaperone_proxy::policy_options(&cfg.policy),
    ) {
        Ok(set) => {
            println!(
                "policy: {} file(s), revision {}, engine {}",
                set.files().len(),
                set.revision(),
                set.engine_kind()
            );
            if let Some(why) = set.engine_fallback() {
                println!(
                    "policy: warning: not compiled ({why}); calls are decided by the interpreter"
                );
            }
        }
        Err(e) => {
            println!("{e}");
            failed = true;
        }
    }
    for p in [&cfg.tls.cert, &cfg.tls.key, &cfg.tls.bundle] {
        if !p.exists() {
            println!(
                "{}: warning: tls file {} does not exist (yet)",
                path.display(),
                p.display()
            );
        }
    }
    if failed {
        return Ok(ExitCode::from(1));
    }
    println!(
        "{}: OK ({} route(s), {} credential(s), {} identity rule(s))",
        path.display(),
        cfg.routes.len(),
        cfg.credentials.len(),
        cfg.identities.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
