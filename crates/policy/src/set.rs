//! A compiled, immutable set of policies and data, and per-call evaluation.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::Serialize;

use crate::decision::{self, DECISION_MODULE_PATH};
use crate::load::{self, DataMerger, Found, Kind};
use crate::value::{json_to_value, parse_duration, type_name};
use crate::vm::CompiledEngine;
use crate::PolicyError;

/// Package of the per-call rules.
pub const AUTHZ_PACKAGE: &str = "data.chaperone.authz";
/// Package of the session (creation, delegation, drift re-check) rules.
pub const SESSION_PACKAGE: &str = "data.chaperone.session";

// The internal module that gathers the rules we read into one object is generated per
// policy set (`decision.rs`): its two entry points are these rules.
pub(crate) const AUTHZ_ENTRY: &str = "data.__chaperone__.authz";
pub(crate) const SESSION_ENTRY: &str = "data.__chaperone__.session";

/// Default per-evaluation time bound.
pub const DEFAULT_EVAL_TIMEOUT: Duration = Duration::from_millis(100);

/// Which evaluator decides calls (config `policy.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// regorus's tree-walking interpreter: the reference evaluator (tests, `--explain`).
    Interpreter,
    /// The default: the policies compiled to regorus's register VM (about 8x faster),
    /// hardened so that any runtime error denies, as in the interpreter (see
    /// `harden.rs`). If the compiler does not support a construct, or a rule could
    /// produce conflicting values, the set uses the interpreter and says why
    /// ([`PolicySet::engine_fallback`]).
    #[default]
    Compiled,
}

/// Options for loading a [`PolicySet`].
#[derive(Debug, Clone, Copy)]
pub struct PolicyOptions {
    /// Wall-clock bound for one evaluation; exceeding it denies.
    pub eval_timeout: Duration,
    /// Evaluator for decisions.
    pub engine: EngineChoice,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            eval_timeout: DEFAULT_EVAL_TIMEOUT,
            engine: EngineChoice::Compiled,
        }
    }
}

/// The outcome of evaluating `data.chaperone.authz` for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Decision {
    /// Value of `allow` (undefined = false; forced false on any error).
    pub allow: bool,
    /// Members of `deny`, sorted.
    pub deny: Vec<String>,
    /// Members of `approval`, sorted.
    pub approval: Vec<String>,
    /// Value of `credential`, if defined.
    pub credential: Option<String>,
    /// Value of `scopes`, if defined.
    pub scopes: Option<Vec<String>>,
    /// Members of `revoke_session`, sorted.
    pub revoke_session: Vec<String>,
    /// Evaluation error, timeout or type error; when set the call is denied.
    pub error: Option<String>,
}

impl Decision {
    /// True when the call may proceed (possibly after approval): `allow`, no `deny`
    /// reason and no error.
    pub fn permitted(&self) -> bool {
        self.allow && self.deny.is_empty() && self.error.is_none()
    }

    fn failed(msg: String) -> Self {
        Self {
            error: Some(msg),
            ..Self::default()
        }
    }
}

/// The outcome of evaluating `data.chaperone.session` for a proposed or live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SessionDecision {
    /// Value of `allow` (undefined = false; forced false on any error).
    pub allow: bool,
    /// Members of `deny`, sorted.
    pub deny: Vec<String>,
    /// Parsed `max_ttl`, if defined.
    #[serde(serialize_with = "ser_opt_duration")]
    pub max_ttl: Option<Duration>,
    /// Policy `scopes` (the grantable set), if defined. The caller grants
    /// requested ∩ these.
    pub scopes: Option<Vec<String>>,
    /// Evaluation error, timeout or type error; when set the session is refused.
    pub error: Option<String>,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}

impl SessionDecision {
    /// True when the session may be created / kept: `allow`, no `deny`, no error.
    pub fn permitted(&self) -> bool {
        self.allow && self.deny.is_empty() && self.error.is_none()
    }

    fn failed(msg: String) -> Self {
        Self {
            error: Some(msg),
            ..Self::default()
        }
    }
}

/// An immutable, compiled set of policies and data. `Send + Sync`; evaluate from any task.
#[derive(Clone)]
pub struct PolicySet {
    /// Prepared interpreter engine; cloned per evaluation. The reference evaluator: used
    /// for tests, explanations, and decisions when `compiled` is `None`.
    engine: Engine,
    /// The same policies compiled to VM bytecode; decides calls when present.
    compiled: Option<Arc<CompiledEngine>>,
    /// Why `compiled` is `None` although the compiled engine was asked for.
    fallback: Option<String>,
    files: Vec<PathBuf>,
    revision: String,
    /// `(rule path, file)` for every rule, sorted by path.
    rules: Vec<(String, String)>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("files", &self.files)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// Files that were read, ready to compile.
pub(crate) struct Loaded {
    pub engine: Engine,
    /// The merged data documents (also added to `engine`).
    pub data: Value,
    pub timer: ExecutionTimerConfig,
    pub files: Vec<PathBuf>,
    pub revision: String,
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read and parse every file (tests included when `with_tests`) into a fresh engine.
pub(crate) fn load_engine(
    paths: &[PathBuf],
    with_tests: bool,
    opts: &PolicyOptions,
) -> Result<Loaded, PolicyError> {
    let found: Vec<Found> = load::discover(paths)?
        .into_iter()
        .filter(|f| with_tests || f.kind != Kind::RegoTest)
        .collect();
    if !found.iter().any(|f| f.kind != Kind::Data) {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(PolicyError::NoPolicies(shown.join(", ")));
    }
    let mut engine = Engine::new();
    engine.set_gather_prints(true);
    let timer = ExecutionTimerConfig {
        limit: opts.eval_timeout,
        check_interval: NonZeroU32::MIN.saturating_add(31),
    };
    engine.set_execution_timer_config(timer);
    let mut merger = DataMerger::default();
    let mut hashed: Vec<(String, Vec<u8>)> = Vec::with_capacity(found.len());
    for f in &found {
        let text = read(&f.path)?;
        match f.kind {
            Kind::Rego | Kind::RegoTest => {
                engine
                    .add_policy(f.path.display().to_string(), text.clone())
                    .map_err(|e| PolicyError::Rego(e.to_string()))?;
            }
            Kind::Data => {
                let value = load::parse_data(&f.path, &text)?;
                merger.merge(&load::data_prefix(&f.rel), value, &f.path)?;
            }
        }
        hashed.push((f.rel.clone(), text.into_bytes()));
    }
    let data = json_to_value(&merger.into_value());
    engine
        .add_data(data.clone())
        .map_err(|e| PolicyError::Rego(format!("data: {e}")))?;
    let decision = decision::module_text(engine.get_modules().iter().map(|m| &**m), &data);
    engine
        .add_policy(DECISION_MODULE_PATH.into(), decision)
        .map_err(|e| PolicyError::Rego(format!("internal decision module: {e}")))?;

    hashed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (rel, content) in &hashed {
        // Length-prefix both parts so (path, content) pairs cannot be confused.
        ctx.update(&(rel.len() as u64).to_be_bytes());
        ctx.update(rel.as_bytes());
        ctx.update(&(content.len() as u64).to_be_bytes());
        ctx.update(content);
    }
    let revision = hex::encode(ctx.finish().as_ref());
    Ok(Loaded {
        engine,
        data,
        timer,
        files: found.into_iter().map(|f| f.path).collect(),
        revision,
    })
}

/// Compile (analyze) the engine and collect its rule list.
pub(crate) fn compile(engine: &mut Engine) -> Result<Vec<(String, String)>, PolicyError> {
    compile_policy(engine).map(|(rules, _)| rules)
}

/// [`compile`], also returning the compiled policy (the input of the VM compiler).
pub(crate) fn compile_policy(
    engine: &mut Engine,
) -> Result<(Vec<(String, String)>, regorus::CompiledPolicy), PolicyError> {
    let entry: regorus::Rc<str> = AUTHZ_ENTRY.into();
    let compiled = engine
        .compile_with_entrypoint(&entry)
        .map_err(|e| PolicyError::Rego(e.to_string()))?;
    let mut rules: Vec<(String, String)> = compiled
        .get_rules()
        .iter()
        .filter(|(path, _)| !path.starts_with("data.__chaperone__."))
        .map(|(path, defs)| {
            let file = defs
                .first()
                .map(|r| r.span().source.file().clone())
                .unwrap_or_default();
            (path.clone(), file)
        })
        .collect();
    rules.sort();
    Ok((rules, compiled))
}

impl PolicySet {
    /// Load every non-test `.rego` file and every `data.json`/`data.yaml`/`data.yml` under
    /// `paths` (see the crate docs for the rules) with default options.
    pub fn load(paths: &[PathBuf]) -> Result<PolicySet, PolicyError> {
        Self::load_with(paths, &PolicyOptions::default())
    }

    /// Like [`PolicySet::load`] with explicit options.
    pub fn load_with(paths: &[PathBuf], opts: &PolicyOptions) -> Result<PolicySet, PolicyError> {
        let Loaded {
            mut engine,
            data,
            timer,
            files,
            revision,
        } = load_engine(paths, false, opts)?;
        let (rules, policy) = compile_policy(&mut engine)?;
        let (compiled, fallback) = match opts.engine {
            EngineChoice::Interpreter => (None, None),
            EngineChoice::Compiled => match CompiledEngine::build(&policy, data, timer) {
                Ok(c) => (Some(Arc::new(c)), None),
                Err(e) => {
                    tracing::warn!(
                        reason = %e,
                        "policy uses a construct the compiled engine does not support; \
                         deciding with the interpreter (slower, same results)"
                    );
                    (None, Some(e))
                }
            },
        };
        Ok(PolicySet {
            engine,
            compiled,
            fallback,
            files,
            revision,
            rules,
        })
    }

    /// Hex SHA-256 over (relative path, content) of every loaded file, sorted by path.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Every loaded file, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// `(rule path, defining file)` for every rule (e.g. `data.chaperone.authz.allow`).
    pub fn rules(&self) -> &[(String, String)] {
        &self.rules
    }

    /// Evaluate one rule with `input`; prints are returned when `prints` is set.
    pub(crate) fn eval_rule_raw(
        &self,
        rule: &str,
        input: Value,
    ) -> (Result<Value, String>, Vec<String>) {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        let result = engine
            .eval_rule(rule.to_string())
            .map_err(|e| e.to_string());
        let prints = engine.take_prints().unwrap_or_default();
        (result, prints)
    }

    /// Which evaluator decides calls: `"compiled"` or `"interpreter"`.
    pub fn engine_kind(&self) -> &'static str {
        if self.compiled.is_some() {
            "compiled"
        } else {
            "interpreter"
        }
    }

    /// Why the compiled engine was asked for but is not in use (the compiler's message).
    pub fn engine_fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The same set, deciding with the interpreter (for differential checks).
    pub fn with_interpreter(&self) -> PolicySet {
        PolicySet {
            compiled: None,
            fallback: None,
            ..self.clone()
        }
    }

    fn eval_entry(&self, rule: &str, input: Value) -> Result<Value, String> {
        if let Some(c) = &self.compiled {
            return c.eval(rule, input);
        }
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine
            .eval_rule(rule.to_string())
            .map_err(|e| e.to_string())
    }

    /// Evaluate `data.chaperone.authz` for one call. Never fails: errors deny.
    pub fn eval_call(&self, input: Value) -> Decision {
        match self.eval_entry(AUTHZ_ENTRY, input) {
            Ok(v) => decision_from_value(&v),
            Err(e) => Decision::failed(format!("policy evaluation failed: {e}")),
        }
    }

    /// Evaluate `data.chaperone.session` for a proposed (or live) session. Never fails: errors deny.
    pub fn eval_session(&self, input: Value) -> SessionDecision {
        match self.eval_entry(SESSION_ENTRY, input) {
            Ok(v) => session_from_value(&v),
            Err(e) => SessionDecision::failed(format!("policy evaluation failed: {e}")),
        }
    }
}

fn want_bool(v: &Value, rule: &str) -> Result<bool, String> {
    match v {
        Value::Null | Value::Undefined => Ok(false),
        Value::Bool(b) => Ok(*b),
        other => Err(format!(
            "{rule} must be a boolean, got {}",
            type_name(other)
        )),
    }
}

fn want_string_set(v: &Value, rule: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null | Value::Undefined => Ok(Vec::new()),
        Value::Set(s) => s
            .iter()
            .map(|m| match m {
                Value::String(s) => Ok(s.to_string()),
                other => Err(format!(
                    "{rule} must be a set of strings, has a {} member",
                    type_name(other)
                )),
            })
            .collect(),
        other => Err(format!(
            "{rule} must be a set of strings, got {}",
            type_name(other)
        )),
    }
}

fn want_opt_string(v: &Value, rule: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null | Value::Undefined => Ok(None),
        Value::String(s) => Ok(Some(s.to_string())),
        other => Err(format!("{rule} must be a string, got {}", type_name(other))),
    }
}

fn want_opt_string_list(v: &Value, rule: &str) -> Result<Option<Vec<String>>, String> {
    let conv = |m: &Value| match m {
        Value::String(s) => Ok(s.to_string()),
        other => Err(format!(
            "{rule} must contain only strings, has a {}",
            type_name(other)
        )),
    };
    match v {
        Value::Null | Value::Undefined => Ok(None),
        Value::Array(a) => a.iter().map(conv).collect::<Result<Vec<_>, _>>().map(Some),
        Value::Set(s) => s.iter().map(conv).collect::<Result<Vec<_>, _>>().map(Some),
        other => Err(format!(
            "{rule} must be an array of strings, got {}",
            type_name(other)
        )),
    }
}

fn note(slot: &mut Option<String>, r: Result<(), String>) {
    if let (None, Err(e)) = (slot.as_ref(), r) {
        *slot = Some(e);
    }
}

/// Turn the gathered authz value into a [`Decision`], failing closed on any type error.
/// Fields that parsed are kept (so `revoke_session` still applies), but `allow` is false.
pub(crate) fn decision_from_value(v: &Value) -> Decision {
    let field = |name| decision::member(v, "authz", name);
    let mut d = Decision::default();
    let mut err = None;
    note(
        &mut err,
        want_bool(field("allow"), "data.chaperone.authz.allow").map(|b| d.allow = b),
    );
    note(
        &mut err,
        want_string_set(field("deny"), "data.chaperone.authz.deny").map(|x| d.deny = x),
    );
    note(
        &mut err,
        want_string_set(field("approval"), "data.chaperone.authz.approval").map(|x| d.approval = x),
    );
    note(
        &mut err,
        want_opt_string(field("credential"), "data.chaperone.authz.credential")
            .map(|x| d.credential = x),
    );
    note(
        &mut err,
        want_opt_string_list(field("scopes"), "data.chaperone.authz.scopes").map(|x| d.scopes = x),
    );
    note(
        &mut err,
        want_string_set(
            field("revoke_session"),
            "data.chaperone.authz.revoke_session",
        )
        .map(|x| d.revoke_session = x),
    );
    if err.is_some() {
        d.allow = false;
        d.error = err;
    }
    d
}

/// Turn the gathered session value into a [`SessionDecision`], failing closed.
pub(crate) fn session_from_value(v: &Value) -> SessionDecision {
    let field = |name| decision::member(v, "session", name);
    let mut d = SessionDecision::default();
    let mut err = None;
    note(
        &mut err,
        want_bool(field("allow"), "data.chaperone.session.allow").map(|b| d.allow = b),
    );
    note(
        &mut err,
        want_string_set(field("deny"), "data.chaperone.session.deny").map(|x| d.deny = x),
    );
    note(
        &mut err,
        want_opt_string_list(field("scopes"), "data.chaperone.session.scopes")
            .map(|x| d.scopes = x),
    );
    let ttl =
        want_opt_string(field("max_ttl"), "data.chaperone.session.max_ttl").and_then(|s| match s {
            None => Ok(None),
            Some(s) => match parse_duration(&s) {
                Some(d) if !d.is_zero() => Ok(Some(d)),
                _ => Err(format!(
                    "data.chaperone.session.max_ttl {s:?} is not a positive duration like \"10m\""
                )),
            },
        });
    note(&mut err, ttl.map(|t| d.max_ttl = t));
    if err.is_some() {
        d.allow = false;
        d.error = err;
    }
    d
}
