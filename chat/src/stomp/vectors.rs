//! Runs the protocol vectors in `chat/tests/vectors/stomp/` (format in that folder's README.md).
//!
//! Each vector is checked whole, fed byte by byte, split in two at every
//! position, and under random mutations (for panics and split invariance).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::testutil::{assert_split_invariant, drive_whole, Event, Rng};
use super::{Command, Limits, Version};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/stomp");

const ALL_VERSIONS: [Option<Version>; 4] = [
    None,
    Some(Version::V1_0),
    Some(Version::V1_1),
    Some(Version::V1_2),
];

/// One expected event, as written in a `.expect` file.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Frame {
        command: Command,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    HeartBeat(usize),
    /// The `StompError` variant name.
    Error(String),
    Partial(usize),
}

impl From<&Event> for Expected {
    fn from(e: &Event) -> Self {
        match e {
            Event::Frame {
                command,
                headers,
                body,
                ..
            } => Expected::Frame {
                command: *command,
                headers: headers.clone(),
                body: body.clone(),
            },
            Event::HeartBeat(n) => Expected::HeartBeat(*n),
            Event::Error(e) => {
                let debug = format!("{e:?}");
                let name = debug.split([' ', '{']).next().unwrap_or_default();
                Expected::Error(name.to_owned())
            }
            Event::Partial(n) => Expected::Partial(*n),
        }
    }
}

/// Versions to run under, and what each run must produce.
type Section = (Vec<Option<Version>>, Vec<Expected>);

struct Vector {
    name: String,
    input: Vec<u8>,
    limits: Limits,
    sections: Vec<Section>,
}

/// Decodes a `.stomp` file: `^@` NUL, `^M` CR, `^^` caret, `^xHH` any
/// octet; one final LF is dropped.
fn decode_input(raw: &[u8]) -> Result<Vec<u8>, String> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'^' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            Some(b'@') => out.push(0),
            Some(b'M') => out.push(b'\r'),
            Some(b'^') => out.push(b'^'),
            Some(b'x') => {
                let hex = raw
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad ^x escape at byte {i}"))?;
                out.push(hex);
                i += 2;
            }
            _ => return Err(format!("bad ^ escape at byte {i}")),
        }
        i += 2;
    }
    Ok(out)
}

/// Reads one `"quoted"` string (escapes `\n \r \t \0 \\ \" \xHH`) from the
/// start of `s`; returns its bytes and the rest of `s`.
fn quoted(s: &str) -> Result<(Vec<u8>, &str), String> {
    let s = s.trim_start();
    let mut chars = s
        .strip_prefix('"')
        .ok_or("expected a quoted string")?
        .char_indices();
    let mut out = Vec::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[1 + i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('0') => out.push(0),
                Some('\\') => out.push(b'\\'),
                Some('"') => out.push(b'"'),
                Some('x') => {
                    let hi = chars.next().and_then(|(_, c)| c.to_digit(16));
                    let lo = chars.next().and_then(|(_, c)| c.to_digit(16));
                    match (hi, lo) {
                        (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                        _ => return Err("bad \\x escape".into()),
                    }
                }
                other => return Err(format!("bad escape \\{other:?}")),
            },
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err("unterminated quoted string".into())
}

fn quoted_str(s: &str) -> Result<(String, &str), String> {
    let (bytes, rest) = quoted(s)?;
    let text = String::from_utf8(bytes).map_err(|_| "header text must be UTF-8")?;
    Ok((text, rest))
}

fn parse_version(token: &str) -> Result<Option<Version>, String> {
    match token {
        "none" => Ok(None),
        t => Version::from_token(t)
            .map(Some)
            .ok_or_else(|| format!("unknown version {t:?}")),
    }
}

fn parse_expect(text: &str) -> Result<(Limits, Vec<Section>), String> {
    let mut limits = Limits::DEFAULT;
    let mut sections: Vec<Section> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(list) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let versions = list
                .split_whitespace()
                .map(parse_version)
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            sections.push((versions, Vec::new()));
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let number = || rest.trim().parse::<usize>().map_err(|e| at(e.to_string()));
        if word == "limit" {
            if !sections.is_empty() {
                return Err(at("limits go before the sections".into()));
            }
            let (field, value) = rest
                .split_once(' ')
                .ok_or_else(|| at("limit NAME N".into()))?;
            let value: usize = value.trim().parse().map_err(|e| at(format!("{e}")))?;
            match field {
                "max_headers" => limits.max_headers = value,
                "max_header_line" => limits.max_header_line = value,
                "max_head" => limits.max_head = value,
                "max_body" => limits.max_body = value,
                f => return Err(at(format!("unknown limit {f}"))),
            }
            continue;
        }
        if sections.is_empty() {
            sections.push((ALL_VERSIONS.to_vec(), Vec::new()));
        }
        let events = &mut sections.last_mut().expect("just pushed").1;
        let last_frame = || format!("line {}: `{word}` outside a frame", n + 1);
        match word {
            "frame" => {
                let command = Command::from_bytes(rest.trim().as_bytes())
                    .ok_or_else(|| at(format!("unknown command {rest:?}")))?;
                events.push(Expected::Frame {
                    command,
                    headers: Vec::new(),
                    body: Vec::new(),
                });
            }
            "header" => {
                let (name, rest) = quoted_str(rest).map_err(at)?;
                let (value, rest) = quoted_str(rest).map_err(at)?;
                if !rest.trim().is_empty() {
                    return Err(at("junk after header".into()));
                }
                match events.last_mut() {
                    Some(Expected::Frame { headers, .. }) => headers.push((name, value)),
                    _ => return Err(last_frame()),
                }
            }
            "body" => {
                let (bytes, rest) = quoted(rest).map_err(at)?;
                if !rest.trim().is_empty() {
                    return Err(at("junk after body".into()));
                }
                match events.last_mut() {
                    Some(Expected::Frame { body, .. }) => *body = bytes,
                    _ => return Err(last_frame()),
                }
            }
            "heartbeat" => events.push(Expected::HeartBeat(number()?)),
            "partial" => events.push(Expected::Partial(number()?)),
            "error" => events.push(Expected::Error(rest.trim().to_owned())),
            w => return Err(at(format!("unknown directive {w:?}"))),
        }
    }
    if sections.is_empty() {
        sections.push((ALL_VERSIONS.to_vec(), Vec::new()));
    }
    Ok((limits, sections))
}

fn load(dir: &Path) -> Vec<Vector> {
    let mut stomp_files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "stomp"))
        .collect();
    stomp_files.sort();
    let mut vectors = Vec::new();
    let mut problems = String::new();
    for path in stomp_files {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let loaded = (|| {
            let raw = std::fs::read(&path).map_err(|e| e.to_string())?;
            let input = decode_input(&raw)?;
            let expect = std::fs::read_to_string(path.with_extension("expect"))
                .map_err(|e| format!("{name}.expect: {e}"))?;
            let (limits, sections) = parse_expect(&expect)?;
            Ok::<_, String>(Vector {
                name: name.clone(),
                input,
                limits,
                sections,
            })
        })();
        match loaded {
            Ok(v) => vectors.push(v),
            Err(e) => writeln!(problems, "{name}: {e}").expect("write to String"),
        }
    }
    // Every .expect needs its .stomp.
    for entry in std::fs::read_dir(dir).expect("vector dir") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "expect") && !path.with_extension("stomp").exists()
        {
            writeln!(problems, "{} has no .stomp", path.display()).expect("write to String");
        }
    }
    assert!(problems.is_empty(), "bad vector files:\n{problems}");
    vectors
}

#[test]
fn vectors_parse_as_expected() {
    let vectors = load(Path::new(DIR));
    assert!(vectors.len() >= 40, "only {} vectors", vectors.len());
    let mut failures = String::new();
    let mut runs = 0;
    for v in &vectors {
        for (versions, expected) in &v.sections {
            for &version in versions {
                runs += 1;
                let events = drive_whole(&v.input, &v.limits, version);
                let got: Vec<Expected> = events.iter().map(Expected::from).collect();
                if &got != expected {
                    writeln!(
                        failures,
                        "{} [{version:?}]:\n  want {expected:?}\n  got  {got:?}",
                        v.name
                    )
                    .expect("write to String");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
    assert!(runs >= vectors.len());
}

#[test]
fn vectors_parse_identically_however_split() {
    for v in load(Path::new(DIR)) {
        for version in ALL_VERSIONS {
            assert_split_invariant(&v.input, &v.limits, version);
        }
    }
}

#[test]
fn mutated_vectors_never_panic_and_split_invariantly() {
    let mut rng = Rng::new(0x5703b);
    let specials = b"\0\r\n:\\cnr\xff";
    for v in load(Path::new(DIR)) {
        for _ in 0..40 {
            let mut input = v.input.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(input.len() + 1);
                let byte = if rng.below(2) == 0 {
                    specials[rng.below(specials.len())]
                } else {
                    rng.below(256) as u8
                };
                match rng.below(3) {
                    0 if at < input.len() => input[at] = byte,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, byte),
                }
            }
            let version = ALL_VERSIONS[rng.below(ALL_VERSIONS.len())];
            assert_split_invariant(&input, &v.limits, version);
            assert_split_invariant(&input, &Limits::DEFAULT, version);
        }
    }
}

#[test]
fn input_notation() {
    assert_eq!(decode_input(b"a^@b^Mc^^d^x7f\n").unwrap(), b"a\0b\rc^d\x7f");
    assert_eq!(decode_input(b"x\n\n").unwrap(), b"x\n");
    assert!(decode_input(b"^q").is_err());
    assert!(decode_input(b"^x4").is_err());
    assert_eq!(
        quoted(r#" "a\"b\x41\0" rest"#).unwrap(),
        (b"a\"bA\0".to_vec(), " rest")
    );
    assert!(quoted("\"open").is_err());
}
