//! The `procflow-snap` command line.

fn main() {
    eprintln!("procflow-snap: no command implemented yet");
    std::process::exit(2);
}
