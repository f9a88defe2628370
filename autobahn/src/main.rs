//! `sockeye-autobahn INDEX_JSON EXPECTED_JSON [--update] [--subset] [--agent NAME]`
//!
//! See the library docs and `autobahn/README.md`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match sockeye_autobahn::parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{}", sockeye_autobahn::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sockeye-autobahn: {e}\n\n{}", sockeye_autobahn::USAGE);
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    match sockeye_autobahn::run(&opts, &mut stdout.lock()) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sockeye-autobahn: {e}");
            ExitCode::from(2)
        }
    }
}
