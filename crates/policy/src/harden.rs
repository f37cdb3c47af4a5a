//! Making a compiled program fail closed on every runtime error.
//!
//! regorus's VM treats a runtime error raised inside a rule body (a builtin's type error,
//! `"a" + 1`, a division by zero) as "this body did not succeed" (`rvm/vm/rules.rs`,
//! `execute_rule_definitions_common`), even with strict builtin errors: only
//! resource-limit errors (time, memory, regex size, instruction count) abort the
//! evaluation. For an authorization policy that fails open: a `deny` whose body errors is
//! silently dropped. The interpreter, like OPA with `--strict-builtin-errors`, fails the
//! whole evaluation instead, and that is the semantics chaperone promises.
//!
//! [`harden`] rewrites a freshly compiled [`Program`] (all of whose parts regorus exposes)
//! so that every runtime error it can raise on policy-controlled or input-controlled data
//! is a resource-limit error, which the VM propagates out of every rule:
//!
//! 1. each builtin the program calls is replaced by a trampoline that calls the original
//!    builtin in strict mode and turns its error into a [`LimitError`]; the builtin's own
//!    message is kept in a thread-local and reported in place of the limit
//!    ([`take_runtime_error`]);
//! 2. the arithmetic instructions (`+ - * / %`) are replaced by calls to builtins that apply
//!    the interpreter's arithmetic (numbers, set difference), errors treated the same way;
//! 3. the VM then runs with lenient builtin errors (the trampolines are strict
//!    themselves), so that comparing values of different types orders them by Rego's total
//!    order, as the interpreter and OPA do, instead of raising an error the VM would
//!    swallow.
//!
//! Every other instruction is checked against a list of instructions that raise no
//! data-dependent error; a program with any other instruction (regorus's `and`/`or`
//! extensions, host awaits, Azure Policy blocks, anything a later regorus adds) is refused,
//! and the policy set is decided by the interpreter instead.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use regorus::rvm::instructions::BuiltinCallParams;
use regorus::rvm::program::{BuiltinInfo, Program};
use regorus::rvm::Instruction;
use regorus::unstable::{numbers, sets, ArithOp, Expr, Ref, Span};
use regorus::{LimitError, Value};

/// The signature of a regorus builtin.
type BuiltinFn = fn(&Span, &[Ref<Expr>], &[Value], bool) -> anyhow::Result<Value>;

/// Trampoline slots: one per distinct builtin name ever compiled in this process. regorus
/// has fewer builtins than this (and a program may call at most `Program::MAX_BUILTINS`).
const SLOTS: usize = 512;

/// The builtin each trampoline slot forwards to. Bound once, never rebound: a slot always
/// means the same builtin, so programs compiled at different times can share slots.
static ORIGINALS: [OnceLock<BuiltinFn>; SLOTS] = [const { OnceLock::new() }; SLOTS];

/// Builtin name -> slot. Only touched while compiling a policy.
static SLOT_OF: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

thread_local! {
    /// The message of the runtime error that aborted the evaluation running on this
    /// thread (a VM evaluation never leaves the thread it started on).
    static RUNTIME_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forget any runtime error recorded on this thread (called before an evaluation).
pub(crate) fn clear_runtime_error() {
    RUNTIME_ERROR.with(|e| e.borrow_mut().take());
}

/// The runtime error recorded on this thread by the last evaluation, if any.
pub(crate) fn take_runtime_error() -> Option<String> {
    RUNTIME_ERROR.with(|e| e.borrow_mut().take())
}

/// Record `err` as the evaluation's runtime error and return the error the VM will
/// propagate instead of swallowing. A genuine limit error passes through unchanged.
fn abort_with(err: anyhow::Error) -> anyhow::Error {
    if err.downcast_ref::<LimitError>().is_some() {
        return err;
    }
    RUNTIME_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_none() {
            *e = Some(err.to_string());
        }
    });
    anyhow::Error::new(LimitError::MemoryLimitExceeded { usage: 0, limit: 0 })
}

/// Calls the builtin bound to slot `I`, strictly; any error aborts the evaluation.
fn trampoline<const I: usize>(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _lenient: bool,
) -> anyhow::Result<Value> {
    match ORIGINALS.get(I).and_then(OnceLock::get) {
        Some(original) => original(span, params, args, true).map_err(abort_with),
        None => Err(abort_with(anyhow::anyhow!(
            "internal error: builtin trampoline {I} is not bound"
        ))),
    }
}

seq_macro::seq!(N in 0..512 {
    /// One trampoline per slot (a builtin is a plain `fn`, so each slot needs its own).
    static TRAMPOLINES: [BuiltinFn; SLOTS] = [#(trampoline::<N>,)*];
});

/// The trampoline for builtin `name`, binding a new slot to `original` on first use.
fn trampoline_for(name: &str, original: BuiltinFn) -> Result<BuiltinFn, String> {
    let mut slots = SLOT_OF.lock().unwrap_or_else(PoisonError::into_inner);
    let slot = match slots.get(name) {
        Some(&slot) => slot,
        None => {
            let slot = slots.len();
            let cell = ORIGINALS
                .get(slot)
                .ok_or_else(|| format!("more than {SLOTS} distinct builtins"))?;
            cell.set(original)
                .map_err(|_| format!("builtin slot {slot} already bound"))?;
            slots.insert(name.to_owned(), slot);
            slot
        }
    };
    TRAMPOLINES
        .get(slot)
        .copied()
        .ok_or_else(|| format!("no trampoline for slot {slot}"))
}

// The interpreter's arithmetic (`eval_arith_expr`): `-` with a set operand is set
// difference, everything else is numeric, strict (division by zero is an error).
fn arith(op: ArithOp, span: &Span, params: &[Ref<Expr>], args: &[Value]) -> anyhow::Result<Value> {
    let (Some(a), Some(b), Some(pa), Some(pb)) =
        (args.first(), args.get(1), params.first(), params.get(1))
    else {
        return Err(abort_with(anyhow::anyhow!(
            "internal error: arithmetic needs two operands"
        )));
    };
    let result = match (&op, a, b) {
        (ArithOp::Sub, Value::Set(_), _) | (ArithOp::Sub, _, Value::Set(_)) => {
            sets::difference(pa, pb, a.clone(), b.clone())
        }
        _ => numbers::arithmetic_operation(span, &op, pa, pb, a.clone(), b.clone(), true),
    };
    result.map_err(abort_with)
}

fn arith_add(s: &Span, p: &[Ref<Expr>], a: &[Value], _: bool) -> anyhow::Result<Value> {
    arith(ArithOp::Add, s, p, a)
}
fn arith_sub(s: &Span, p: &[Ref<Expr>], a: &[Value], _: bool) -> anyhow::Result<Value> {
    arith(ArithOp::Sub, s, p, a)
}
fn arith_mul(s: &Span, p: &[Ref<Expr>], a: &[Value], _: bool) -> anyhow::Result<Value> {
    arith(ArithOp::Mul, s, p, a)
}
fn arith_div(s: &Span, p: &[Ref<Expr>], a: &[Value], _: bool) -> anyhow::Result<Value> {
    arith(ArithOp::Div, s, p, a)
}
fn arith_mod(s: &Span, p: &[Ref<Expr>], a: &[Value], _: bool) -> anyhow::Result<Value> {
    arith(ArithOp::Mod, s, p, a)
}

/// The replacement builtins for the five arithmetic instructions, by instruction kind.
const ARITH: [(&str, BuiltinFn); 5] = [
    ("__chaperone.arith.plus", arith_add),
    ("__chaperone.arith.minus", arith_sub),
    ("__chaperone.arith.mul", arith_mul),
    ("__chaperone.arith.div", arith_div),
    ("__chaperone.arith.rem", arith_mod),
];

/// Rewrite `program` so that no runtime error can be swallowed (see the module docs).
/// The error names the instruction that cannot be hardened.
pub(crate) fn harden(program: &mut Program) -> Result<(), String> {
    if !program.has_resolved_builtins() {
        program
            .initialize_resolved_builtins()
            .map_err(|e| e.to_string())?;
    }
    if program.resolved_builtins.len() != program.builtin_info_table.len() {
        return Err("internal error: builtin table and resolved builtins differ".into());
    }

    // 1. Builtins: every call goes through a strict, aborting trampoline.
    for (info, resolved) in program
        .builtin_info_table
        .iter()
        .zip(program.resolved_builtins.iter_mut())
    {
        resolved.0 = trampoline_for(&info.name, resolved.0)?;
    }

    // 2. Arithmetic becomes builtin calls; 3. everything else must be error-free.
    let mut arith_index: [Option<u16>; 5] = [None; 5];
    for pc in 0..program.instructions.len() {
        let Some(instruction) = program.instructions.get(pc) else {
            break;
        };
        let (kind, dest, left, right) = match *instruction {
            Instruction::Add { dest, left, right } => (0, dest, left, right),
            Instruction::Sub { dest, left, right } => (1, dest, left, right),
            Instruction::Mul { dest, left, right } => (2, dest, left, right),
            Instruction::Div { dest, left, right } => (3, dest, left, right),
            Instruction::Mod { dest, left, right } => (4, dest, left, right),
            // Raise no error that depends on data (the VM's own invariants aside).
            Instruction::Load { .. }
            | Instruction::LoadTrue { .. }
            | Instruction::LoadFalse { .. }
            | Instruction::LoadNull { .. }
            | Instruction::LoadBool { .. }
            | Instruction::LoadData { .. }
            | Instruction::LoadInput { .. }
            | Instruction::LoadContext { .. }
            | Instruction::LoadMetadata { .. }
            | Instruction::Move { .. }
            | Instruction::Eq { .. }
            | Instruction::Ne { .. }
            // Lenient VM: comparisons use Rego's total order across types.
            | Instruction::Lt { .. }
            | Instruction::Le { .. }
            | Instruction::Gt { .. }
            | Instruction::Ge { .. }
            | Instruction::Not { .. }
            | Instruction::BuiltinCall { .. }
            | Instruction::FunctionCall { .. }
            | Instruction::Return { .. }
            | Instruction::ObjectSet { .. }
            | Instruction::ObjectCreate { .. }
            | Instruction::Index { .. }
            | Instruction::IndexLiteral { .. }
            | Instruction::ChainedIndex { .. }
            | Instruction::ArrayNew { .. }
            | Instruction::ArrayPush { .. }
            | Instruction::ArrayPushDefined { .. }
            | Instruction::ArrayCreate { .. }
            | Instruction::SetNew { .. }
            | Instruction::SetAdd { .. }
            | Instruction::SetCreate { .. }
            | Instruction::Contains { .. }
            | Instruction::Count { .. }
            | Instruction::AssertEq { .. }
            | Instruction::Guard { .. }
            | Instruction::ReturnUndefinedIfNotTrue { .. }
            | Instruction::CoalesceUndefinedToNull { .. }
            | Instruction::LoopStart { .. }
            | Instruction::LoopNext { .. }
            | Instruction::CallRule { .. }
            | Instruction::RuleInit { .. }
            | Instruction::VirtualDataDocumentLookup { .. }
            | Instruction::DestructuringSuccess {}
            | Instruction::RuleReturn {}
            | Instruction::Halt {}
            | Instruction::ComprehensionBegin { .. }
            | Instruction::ComprehensionYield { .. }
            | Instruction::ComprehensionEnd {} => continue,
            ref other => {
                return Err(format!(
                    "the compiled program uses `{other:?}`, whose runtime errors the \
                     compiled engine cannot make fail closed"
                ))
            }
        };
        let (name, function) = ARITH[kind];
        let builtin_index = match arith_index[kind] {
            Some(index) => index,
            None => {
                let index = program.add_builtin_info(BuiltinInfo {
                    name: name.to_owned(),
                    num_args: 2,
                });
                program.resolved_builtins.push((function, 2));
                arith_index[kind] = Some(index);
                index
            }
        };
        if program.instruction_data.builtin_call_params.len() >= usize::from(u16::MAX) {
            return Err("too many builtin calls to rewrite arithmetic".into());
        }
        let params_index = program.add_builtin_call_params(BuiltinCallParams {
            dest,
            builtin_index,
            num_args: 2,
            args: [left, right, 0, 0, 0, 0, 0, 0],
        });
        if let Some(slot) = program.instructions.get_mut(pc) {
            *slot = Instruction::BuiltinCall { params_index };
        }
    }
    program.validate_limits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruction_whose_errors_cannot_be_hardened_is_refused() {
        let mut program = Program::new();
        program.add_instruction(
            Instruction::Or {
                dest: 0,
                left: 1,
                right: 2,
            },
            None,
        );
        let err = harden(&mut program).err().unwrap_or_default();
        assert!(err.contains("cannot make fail closed"), "{err}");
    }

    #[test]
    fn arithmetic_becomes_a_strict_builtin_call() {
        let mut program = Program::new();
        program.add_instruction(
            Instruction::Div {
                dest: 0,
                left: 1,
                right: 2,
            },
            None,
        );
        assert_eq!(harden(&mut program), Ok(()));
        assert!(matches!(
            program.instructions.first(),
            Some(Instruction::BuiltinCall { params_index: 0 })
        ));
        let params = program.instruction_data.builtin_call_params.first();
        assert_eq!(
            params.map(|p| (p.dest, p.num_args, p.args[0], p.args[1])),
            Some((0, 2, 1, 2))
        );
        assert_eq!(
            program
                .builtin_info_table
                .first()
                .map(|b| (b.name.as_str(), b.num_args)),
            Some(("__chaperone.arith.div", 2))
        );
        assert_eq!(program.resolved_builtins.len(), 1);
    }

    #[test]
    fn a_builtin_name_keeps_its_slot() {
        fn one(_: &Span, _: &[Ref<Expr>], _: &[Value], _: bool) -> anyhow::Result<Value> {
            Ok(Value::from(1))
        }
        let a = trampoline_for("__chaperone.test.one", one).map(|f| f as usize);
        let b = trampoline_for("__chaperone.test.one", one).map(|f| f as usize);
        assert!(a.is_ok());
        assert_eq!(a, b);
    }

    #[test]
    fn errors_are_recorded_and_limits_pass_through() {
        clear_runtime_error();
        let limit = abort_with(anyhow::Error::new(LimitError::RegexSizeLimitExceeded {
            limit: 1,
        }));
        assert!(matches!(
            limit.downcast_ref::<LimitError>(),
            Some(LimitError::RegexSizeLimitExceeded { limit: 1 })
        ));
        assert_eq!(take_runtime_error(), None);
        let aborted = abort_with(anyhow::anyhow!("`upper` expects string argument"));
        assert!(aborted.downcast_ref::<LimitError>().is_some());
        assert_eq!(
            take_runtime_error().as_deref(),
            Some("`upper` expects string argument")
        );
        assert_eq!(take_runtime_error(), None);
    }
}
