//! `app`: greet on the command line, serve HTTP, or check itself.
//!
//! ```text
//! app --version              print the version
//! app greet [NAME]           print a greeting
//! app serve [ADDR]           serve HTTP on ADDR (default 0.0.0.0:8080)
//! app self-test              serve a few requests to itself on loopback and print them
//! ```

use std::net::TcpListener;
use std::process::ExitCode;

const USAGE: &str = "usage: app --version | greet [NAME] | serve [ADDR] | self-test";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["--version"] | ["version"] => {
            println!("app {}", app::VERSION);
            Ok(())
        }
        ["greet"] => {
            println!("{}", app::greet(""));
            Ok(())
        }
        ["greet", name] => {
            println!("{}", app::greet(name));
            Ok(())
        }
        ["serve"] => serve("0.0.0.0:8080"),
        ["serve", addr] => serve(addr),
        ["self-test"] => app::self_test().map(|lines| {
            for line in lines {
                println!("{}", line);
            }
            println!("self-test passed");
        }),
        ["--help"] | ["-h"] | ["help"] => {
            println!("{}", USAGE);
            Ok(())
        }
        _ => {
            eprintln!("{}", USAGE);
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("app: {}", e);
            ExitCode::FAILURE
        }
    }
}

fn serve(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    eprintln!("app: listening on http://{}", listener.local_addr()?);
    app::serve(&listener, None)
}
