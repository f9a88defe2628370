//! The load generator: drives a running WebSocket echo server from one thread, on Sockeye's
//! client event loop, and prints what it measured (last line: `RESULT {json}`).
//!
//! ```text
//! loadgen echo  --url ws://127.0.0.1:9001/ --conns 100 --size 16 --depth 1 --secs 5 [--binary] [--pid PID]
//! loadgen conns --url ws://127.0.0.1:9001/ --conns 15000 --procs 2 --sources 16 [--pid PID]
//! loadgen fanout --transport ws|tcp --subs 1000 --size 100 [--window 4 | --flood 1000] [--server-pid PID,...]
//! loadgen sockjs --url http://127.0.0.1:8081/echo --sessions 100 --size 100 --window 8 [--pid PID]
//! ```
//!
//! Only loopback servers are driven (127.0.0.0/8, ::1), and every run is bounded in time and
//! in count. See `benches/README.md` for every option. `echo` and `conns` take `wss://` URLs
//! too: the roots are the PEM file `$LOADGEN_CA` names (the platform's without it).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::str::FromStr;

use sockeye::client::Target;

mod conns;
mod echo;
mod fanout;
mod figures;
mod histogram;
mod sockjs;
mod sys;

const USAGE: &str = "\
usage:
  loadgen echo  [--url ws://127.0.0.1:9001/] [--conns 100] [--size 16] [--depth 1] [--secs 5]
                [--warmup 1] [--binary] [--json] [--deflate] [--pid SERVER_PID] [--sources 1]
                [--rate 5000]
  loadgen conns [--url ws://127.0.0.1:9001/] [--conns 1000] [--procs 1] [--sources 16]
                [--rate 5000] [--hold 3] [--settle 1] [--pid SERVER_PID]
                [--deflate on|takeover] [--message BYTES | --subscribe DESTINATION]
  loadgen fanout [--transport ws|tcp] [--url ws://127.0.0.1:8080/ws | --addr 127.0.0.1:61613]
                [--subs 100] [--size 100] [--rate 0] [--window 4] [--seconds 10] [--warmup 1]
                [--server-pid PID[,PID...]] [--destination /topic/bench] [--login guest]
                [--passcode guest] [--vhost /] [--conn-rate 2000] [--flood R]
                [--slow-consumer disconnect|throttle|drop] [--stall 0]
                [--subscribe-urls URL,URL... | --subscribe-addrs IP:PORT,...] [--deflate]
                [--threads 1]
  loadgen sockjs [--url http://127.0.0.1:8081/echo] [--sessions 100] [--size 100] [--window 8]
                [--batch 1] [--secs 5] [--warmup 1] [--pid SERVER_PID] [--rate 1000]
Only loopback targets (127.0.0.0/8, [::1]). The last line printed is `RESULT {json}`.";

/// Most connections one run may ask for, over all its processes.
pub const MAX_CONNS: usize = 100_000;
/// Longest a measured phase may last, in seconds.
pub const MAX_SECS: f64 = 300.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => echo::main(&args[1..]),
        Some("conns") => conns::main(&args[1..]),
        Some("fanout") => fanout::main(&args[1..]),
        Some("sockjs") => sockjs::main(&args[1..]),
        Some(conns::WORKER) => conns::worker(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("no mode given\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` options and `--flag`s, taken one by one; what is left over is an error.
pub struct Opts {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Opts {
    pub fn parse(args: &[String], flags: &[&str]) -> Result<Opts, String> {
        let mut values = HashMap::new();
        let mut found = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}\n{USAGE}"))?;
            if flags.contains(&name) {
                found.push(name.to_string());
                continue;
            }
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), value.clone());
        }
        Ok(Opts {
            values,
            flags: found,
        })
    }

    pub fn get<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, String> {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    pub fn opt<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        self.values
            .remove(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("bad value for --{name}: {v:?}"))
            })
            .transpose()
    }

    pub fn flag(&mut self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// Fails on options nobody asked for.
    pub fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            Some(name) => Err(format!("unknown option --{name}\n{USAGE}")),
            None => Ok(()),
        }
    }
}

/// Resolves `url` and refuses anything but a loopback address.
/// The roots for `wss://` targets: the PEM file `$LOADGEN_CA` names, if set (an environment
/// variable, so that `conns`' worker processes inherit it).
pub fn client_tls(config: &mut sockeye::client::ClientConfig) -> Result<(), String> {
    if let Some(path) = std::env::var_os("LOADGEN_CA") {
        let roots = sockeye::tls::ClientTls::with_roots_file(path.as_ref())
            .map_err(|e| format!("LOADGEN_CA: {e}"))?;
        config.tls = Some(roots);
    }
    Ok(())
}

pub fn loopback_target(url: &str) -> Result<Target, String> {
    let target = Target::from_url(url).map_err(|e| format!("{url}: {e}"))?;
    if !target.addr.ip().is_loopback() {
        return Err(format!(
            "{url} resolves to {}: only loopback targets (127.0.0.0/8, [::1]) are allowed",
            target.addr.ip()
        ));
    }
    Ok(target)
}

/// The source address of connection `index` when spreading over `sources` addresses of
/// 127.0.0.0/8 (127.0.0.1, 127.0.0.2, ...); `None` with one source: the kernel picks.
pub fn source(target: &Target, index: usize, sources: usize) -> Option<IpAddr> {
    if sources <= 1 || !target.addr.is_ipv4() {
        return None;
    }
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    Some(IpAddr::V4(Ipv4Addr::from(base + (index % sources) as u32)))
}

/// Checks a count or duration option against its bound.
pub fn bounded<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    low: T,
    high: T,
) -> Result<T, String> {
    if value < low || value > high {
        return Err(format!("--{name} {value} is outside {low}..={high}"));
    }
    Ok(value)
}

/// A JSON string literal (the values here are URLs and short words).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for a figure that could not be measured.
pub fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_flags_and_leftovers() {
        let mut o = Opts::parse(
            &strings(&["--conns", "10", "--binary", "--x", "1"]),
            &["binary"],
        )
        .unwrap();
        assert_eq!(o.get("conns", 1usize), Ok(10));
        assert_eq!(o.get("size", 16usize), Ok(16));
        assert!(o.flag("binary"));
        assert!(o.finish().is_err());
        assert!(Opts::parse(&strings(&["--conns"]), &[]).is_err());
        assert!(Opts::parse(&strings(&["conns"]), &[]).is_err());
    }

    #[test]
    fn only_loopback_targets_are_driven() {
        assert!(loopback_target("ws://127.0.0.1:9001/").is_ok());
        assert!(loopback_target("ws://127.8.9.10:9001/").is_ok());
        assert!(loopback_target("ws://[::1]:9001/").is_ok());
        assert!(loopback_target("ws://10.0.0.1:9001/").is_err());
        assert!(loopback_target("ws://192.168.1.1/").is_err());
    }

    #[test]
    fn sources_spread_over_127_addresses() {
        let t = loopback_target("ws://127.0.0.1:9001/").unwrap();
        assert_eq!(source(&t, 5, 1), None);
        assert_eq!(source(&t, 0, 16), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source(&t, 17, 16), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source(&t, 300, 1000), Some("127.0.1.45".parse().unwrap()));
    }

    #[test]
    fn json_helpers() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_num(Some(1.5)), "1.500");
        assert_eq!(json_num(None), "null");
        assert_eq!(json_num(Some(f64::NAN)), "null");
    }
}
