//! The compiled decision engine: the policy set compiled once to regorus's register VM
//! (RVM) bytecode, executed per call from a small pool of VMs.
//!
//! Why: the tree-walking interpreter pays a large fixed cost per evaluation (cloning the
//! engine, re-preparing its state, building `Value` trees per rule); the compiled program
//! evaluates the example library an order of magnitude faster (see docs/performance.md).
//!
//! Before use the program is hardened (`harden.rs`) so that no runtime error can be
//! swallowed by the VM, and slimmed (what the VM clones per rule call but never reads is
//! dropped). The interpreter stays the reference: `chaperone policy test`,
//! `policy eval --explain` and any policy that uses a construct the compiler does not
//! support or whose rules could conflict (it is reported and the set falls back to the
//! interpreter). Differential tests check both agree.

use std::sync::{Arc, Mutex, PoisonError};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::{Instruction, RegoVM};
use regorus::unstable::{Expr, Literal, Query, Rule, RuleHead};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::CompiledPolicy;
use regorus::Value;

use crate::harden::{clear_runtime_error, harden, take_runtime_error};
use crate::set::{AUTHZ_ENTRY, SESSION_ENTRY};

/// VMs kept for reuse. One per concurrently evaluating worker is enough; more are dropped.
const POOL_MAX: usize = 64;

/// Instruction budget per evaluation. The wall-clock timer is the real bound; this only
/// lifts the VM's small default (25,000) so that large policies are not cut off by it.
const MAX_INSTRUCTIONS: usize = 50_000_000;

/// Instructions between two checks of the evaluation deadline.
const TIMER_CHECK_INSTRUCTIONS: u32 = 512;

/// A compiled program, its data, and idle VMs ready to run it.
pub(crate) struct CompiledEngine {
    program: Arc<Program>,
    /// Policy file of each source index in the program's instruction spans.
    source_files: Vec<Option<String>>,
    data: Value,
    timer: ExecutionTimerConfig,
    pool: Mutex<Vec<RegoVM>>,
}

impl std::fmt::Debug for CompiledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledEngine")
            .field("instructions", &self.program.instructions.len())
            .finish_non_exhaustive()
    }
}

impl CompiledEngine {
    /// Compile the analysed policy (both decision entry points) to a program. The
    /// error is the compiler's message (an unsupported construct, with its location).
    pub(crate) fn build(
        policy: &CompiledPolicy,
        data: Value,
        timer: ExecutionTimerConfig,
    ) -> Result<Self, String> {
        if let Some(risk) = conflict_risks(policy).into_iter().next() {
            return Err(risk);
        }
        let program = Compiler::compile_from_policy(policy, &[AUTHZ_ENTRY, SESSION_ENTRY])
            .map_err(|e| e.to_string())?;
        // Every runtime error must abort the evaluation, as in the interpreter.
        let mut program = Arc::unwrap_or_clone(program);
        harden(&mut program)?;
        let source_files = source_files(&program, policy);
        slim_rule_infos(&mut program);
        let program = Arc::new(program);
        let compiled = Self {
            program,
            source_files,
            data,
            timer,
            pool: Mutex::new(Vec::new()),
        };
        // Fail now, not on the first call, if the program cannot take the data.
        let vm = compiled.fresh_vm()?;
        compiled.release(vm);
        Ok(compiled)
    }

    fn fresh_vm(&self) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(|e| e.to_string())?;
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        // Lenient on purpose: the hardened program's builtins are strict themselves and
        // abort on error; lenient mode only makes comparisons across types use Rego's
        // total order (as the interpreter does) instead of raising an error the VM would
        // swallow. See `harden`.
        vm.set_strict_builtin_errors(false);
        // One clock read per TIMER_CHECK_INSTRUCTIONS instructions (well under a
        // microsecond of work each), not per 32 as the interpreter's work units.
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            check_interval: std::num::NonZeroU32::new(TIMER_CHECK_INSTRUCTIONS)
                .unwrap_or(self.timer.check_interval),
            ..self.timer
        }));
        Ok(vm)
    }

    fn release(&self, vm: RegoVM) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(vm);
        }
    }

    /// Evaluate one entry point (`AUTHZ_ENTRY` or `SESSION_ENTRY`) with `input`.
    pub(crate) fn eval(&self, entry: &str, input: Value) -> Result<Value, String> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut vm = match pooled {
            Some(vm) => vm,
            None => self.fresh_vm()?,
        };
        vm.set_input(input);
        clear_runtime_error();
        let result = vm.execute_entry_point_by_name(entry);
        // Never keep one call's input (it carries the session) in an idle VM.
        vm.set_input(Value::Undefined);
        // A runtime error recorded by the hardened program is the evaluation's error,
        // whatever the VM made of it (it propagates today; if it ever did not, the
        // result would still not be used).
        match (result, take_runtime_error()) {
            (Ok(v), None) => {
                self.release(vm);
                Ok(v)
            }
            // A VM that failed midway is dropped rather than trusted again.
            (Ok(_), Some(runtime)) => Err(runtime),
            (Err(_), Some(runtime)) => Err(self.locate(vm.get_pc(), &runtime)),
            (Err(e), None) => Err(e.to_string()),
        }
    }

    /// A builtin's error message, pointed at the policy source of the call that raised
    /// it (the builtin itself only knows a placeholder location), in the interpreter's
    /// layout.
    fn locate(&self, pc: usize, message: &str) -> String {
        // The VM stops at the failing instruction; only a builtin call can raise one.
        if !matches!(
            self.program.instructions.get(pc),
            Some(Instruction::BuiltinCall { .. })
        ) {
            return message.to_owned();
        }
        let what = message
            .rsplit_once("error: ")
            .map_or(message, |(_, what)| what);
        let Some(span) = self
            .program
            .instruction_spans
            .get(pc)
            .and_then(Option::as_ref)
        else {
            return message.to_owned();
        };
        let Some(name) = self
            .source_files
            .get(span.source_index)
            .and_then(Option::as_ref)
        else {
            return message.to_owned();
        };
        let text = self
            .program
            .sources
            .iter()
            .find(|f| f.name == *name)
            .and_then(|f| f.content.lines().nth(span.line.saturating_sub(1)))
            .unwrap_or_default();
        let line = span.line.to_string();
        let pad = " ".repeat(line.len());
        let caret = " ".repeat(span.column.saturating_sub(1));
        format!(
            "\n--> {}:{}:{}\n{pad} |\n{line} | {text}\n{pad} | {caret}^\nerror: {what}",
            name, span.line, span.column
        )
    }
}

/// The VM clones a rule's `RuleInfo` on every call of the rule; drop what it never reads
/// at run time (names, all-`None` destructuring entries, all-`false` `else` flags: a
/// missing entry reads as `None` / `false`), so those clones allocate nothing.
fn slim_rule_infos(program: &mut Program) {
    for info in &mut program.rule_infos {
        info.name = String::new();
        if let Some(function) = &mut info.function_info {
            function.param_names = Vec::new();
        }
        if info.destructuring_blocks.iter().all(Option::is_none) {
            info.destructuring_blocks = Vec::new();
        }
        if info.else_bodies.iter().flatten().all(|is_else| !is_else) {
            info.else_bodies = Vec::new();
        }
    }
}

/// The policy file behind each source index of the program's instruction spans. The
/// compiler numbers sources in the order it first emits code from them, which is not the
/// order of `program.sources`; it is recovered from the rules: a rule's definitions are
/// compiled in order, and the first instruction of each is in that definition's file.
/// An index with two candidate files (which would be a compiler change) maps to none.
fn source_files(program: &Program, policy: &CompiledPolicy) -> Vec<Option<String>> {
    let rules = policy.get_rules();
    let mut files: Vec<Option<String>> = Vec::new();
    let mut ambiguous = Vec::new();
    for info in &program.rule_infos {
        let Some(defs) = rules.get(&info.name) else {
            continue;
        };
        let specs = defs.iter().filter(|r| matches!(&***r, Rule::Spec { .. }));
        for (bodies, def) in info.definitions.iter().zip(specs) {
            let Some(span) = bodies
                .first()
                .and_then(|&pc| program.instruction_spans.get(usize::try_from(pc).ok()?))
                .and_then(Option::as_ref)
            else {
                continue;
            };
            let file = def.span().source.file().clone();
            if files.len() <= span.source_index {
                files.resize(span.source_index + 1, None);
            }
            match files.get_mut(span.source_index) {
                Some(slot @ None) => *slot = Some(file),
                Some(Some(known)) if *known != file => ambiguous.push(span.source_index),
                _ => {}
            }
        }
    }
    for index in ambiguous {
        if let Some(slot) = files.get_mut(index) {
            *slot = None;
        }
    }
    files
}

// ---------------------------------------------------------------------------------------
// The conflict gate.
//
// Where Rego says "error", the interpreter (and OPA) raise `eval_conflict_error` when a
// complete rule or function produces two different values; the compiled engine instead
// makes that rule undefined, which for `credential` / `scopes` or a helper used under
// `not` could widen a decision. We only compile policies in which no such conflict can
// happen, judged statically and conservatively: every value-producing rule (complete rule,
// partial object, function) either has one definition whose bodies cannot iterate, or
// produces the same constant from every definition (`allow if ...` in several files).
// Anything else is decided by the interpreter, which reports the conflict as an error.
// ---------------------------------------------------------------------------------------

/// Reasons (one per risky rule) why the compiled engine could diverge from the
/// interpreter on conflicting values. Empty when the policy is safe to compile.
pub(crate) fn conflict_risks(policy: &CompiledPolicy) -> Vec<String> {
    let mut risks = Vec::new();
    for (path, defs) in policy.get_rules() {
        if path.starts_with("data.__chaperone__.") {
            continue;
        }
        let specs: Vec<(&RuleHead, &[regorus::unstable::RuleBody], u32, String)> = defs
            .iter()
            .filter_map(|r| match &**r {
                Rule::Spec { head, bodies, span } => Some((
                    head,
                    bodies.as_slice(),
                    span.line,
                    span.source.file().clone(),
                )),
                Rule::Default { .. } => None,
            })
            .collect();
        let Some(&(_, _, line, ref file)) = specs.first() else {
            continue;
        };
        let mut values: Vec<Option<String>> = Vec::new();
        let mut partial_object = false;
        let mut single_valued = true;
        let mut value_producing = false;
        for (head, bodies, _, _) in &specs {
            let (assign, is_func, refr) = match head {
                RuleHead::Set { .. } => continue,
                RuleHead::Compr { assign, refr, .. } => (assign, false, refr),
                RuleHead::Func { assign, refr, .. } => (assign, true, refr),
            };
            value_producing = true;
            if !is_func && matches!(&**refr, Expr::RefBrack { .. }) {
                partial_object = true;
            }
            // The head value, then any `else` values.
            values.push(match assign {
                None => Some("true".into()),
                Some(a) => constant(&a.value),
            });
            for b in bodies.iter() {
                if let Some(a) = &b.assign {
                    values.push(constant(&a.value));
                }
                if may_iterate(&b.query) {
                    single_valued = false;
                }
            }
        }
        if !value_producing {
            continue;
        }
        let all_same_constant =
            values.iter().all(Option::is_some) && values.windows(2).all(|w| w[0] == w[1]);
        let safe = !partial_object && (all_same_constant || (specs.len() == 1 && single_valued));
        if !safe {
            risks.push(format!(
                "{path} ({file}:{line}) may produce conflicting values \
                 (several definitions with different values, an iterating body, or a partial object)"
            ));
        }
    }
    risks
}

/// The canonical text of a constant (literal scalar or collection of literals).
fn constant(e: &Expr) -> Option<String> {
    fn is_const(e: &Expr) -> bool {
        match e {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => true,
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                items.iter().all(|i| is_const(i))
            }
            Expr::Object { fields, .. } => {
                fields.iter().all(|(_, k, v)| is_const(k) && is_const(v))
            }
            _ => false,
        }
    }
    fn text(e: &Expr) -> String {
        match e {
            Expr::String { value, .. }
            | Expr::RawString { value, .. }
            | Expr::Number { value, .. }
            | Expr::Bool { value, .. }
            | Expr::Null { value, .. } => value.to_string(),
            Expr::Array { items, .. } => {
                let t: Vec<String> = items.iter().map(|i| text(i)).collect();
                format!("[{}]", t.join(","))
            }
            Expr::Set { items, .. } => {
                let mut t: Vec<String> = items.iter().map(|i| text(i)).collect();
                t.sort();
                t.dedup();
                format!("set({})", t.join(","))
            }
            Expr::Object { fields, .. } => {
                let mut t: Vec<String> = fields
                    .iter()
                    .map(|(_, k, v)| format!("{}:{}", text(k), text(v)))
                    .collect();
                t.sort();
                format!("{{{}}}", t.join(","))
            }
            _ => String::new(),
        }
    }
    is_const(e).then(|| text(e))
}

/// Conservatively: can this query succeed more than once (bind different values)?
/// `some` declarations and iteration, and any ref indexed by a variable (which may be
/// unbound, i.e. iterate) count. Comprehensions and `every` do not: they yield one value.
fn may_iterate(q: &Query) -> bool {
    q.stmts.iter().any(|s| match &s.literal {
        Literal::SomeVars { .. } | Literal::SomeIn { .. } => true,
        Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => expr_iterates(expr),
        Literal::Every { .. } => false,
    })
}

fn expr_iterates(e: &Expr) -> bool {
    match e {
        Expr::RefBrack { refr, index, .. } => {
            matches!(&**index, Expr::Var { .. }) || expr_iterates(refr) || expr_iterates(index)
        }
        Expr::RefDot { refr, .. } => expr_iterates(refr),
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().any(|i| expr_iterates(i))
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .any(|(_, k, v)| expr_iterates(k) || expr_iterates(v)),
        Expr::Call { params, .. } => params.iter().any(|p| expr_iterates(p)),
        Expr::UnaryExpr { expr, .. } => expr_iterates(expr),
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => expr_iterates(lhs) || expr_iterates(rhs),
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            key.as_ref().is_some_and(|k| expr_iterates(k))
                || expr_iterates(value)
                || expr_iterates(collection)
        }
        // Comprehensions produce one value however many times their query succeeds.
        Expr::ArrayCompr { .. } | Expr::SetCompr { .. } | Expr::ObjectCompr { .. } => false,
        _ => false,
    }
}
