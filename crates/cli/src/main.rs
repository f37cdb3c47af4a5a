fn main() -> std::process::ExitCode {
    chaperone_cli::main()
}
