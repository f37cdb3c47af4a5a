// mimalloc: the request path allocates and frees many small objects (policy values,
// headers, audit records); it is measurably faster than glibc malloc there and returns
// memory to the OS eagerly (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    chaperone_cli::main()
}
