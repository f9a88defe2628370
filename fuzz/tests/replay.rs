//! Replays the committed seed corpus (`corpus/TARGET/seed-*`) through the target bodies without
//! libFuzzer, so that `cargo test --manifest-path fuzz/Cargo.toml` checks them on stable.

use std::fs;
use std::path::Path;

use sockeye_fuzz::targets;

#[test]
fn seeds_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut replayed = 0;
    for name in targets::NAMES {
        let dir = root.join(name);
        let mut seeds: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for seed in seeds {
            let data = fs::read(&seed).expect("read seed");
            eprintln!("{name} {}", seed.display());
            targets::run(name, &data);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} seeds");
}

/// Replays `regressions/TARGET-NAME`: inputs that made a target fail, so fixed bugs stay fixed
/// (see regressions/README.md).
#[test]
fn regressions_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("regressions dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_none())
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let target = name.split('-').next().unwrap();
        eprintln!("{target} {}", file.display());
        targets::run(target, &fs::read(&file).expect("read regression"));
    }
}
