//! The short fuzz run in CI (issue 7, item 7): the committed libFuzzer corpora replayed through
//! the four property checks of `syncgate::fuzzing`, then a deterministic mutation run seeded from
//! them, so every `cargo test` exercises the same properties `cargo fuzz` does, on stable and in
//! a few seconds. Recorded findings (`fuzz/findings/`) are replayed and reported, not asserted:
//! they are bugs known to be open, fixed elsewhere. Likewise the mutation run reports, without
//! failing, findings of the classes listed in `fuzz/findings/open-classes`; any other finding,
//! and any panic that is not a finding (a crash in syncgate's own code), fails it. See
//! `docs/fuzzing.md`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use syncgate::fuzzing;

type Check = fn(&[u8]);

/// How many mutated inputs each target runs in a debug build: the URL targets run the classifier's
/// loose reading (several decodings × dot readings) and cost about 0.3 ms an input unoptimised,
/// so they get fewer than the body reader, to keep the whole run to seconds.
const URL_ITERATIONS: usize = 5_000;
const BODY_ITERATIONS: usize = 20_000;

/// Mutated inputs are kept at most this long (libFuzzer's default `-max_len` is 4096).
const MAX_LEN: usize = 4_096;

/// One input of a small corpus must never take this long (a pathological parse).
const SLOW_INPUT: Duration = Duration::from_secs(1);

/// Byte strings the mutator inserts: the characters the issue's bypasses are made of.
const INTERESTING: &[&[u8]] = &[
    b"%",
    b"/",
    b"\\",
    b"\t",
    b"\r",
    b"\n",
    b" ",
    "\u{a0}".as_bytes(),
    "\u{feff}".as_bytes(),
    b"(",
    b")",
    b"'",
    b"\"",
    b".",
    b"..",
    b";",
    b":",
    b"?",
    b"#",
    b"%2F",
    b"%25",
    b"%2e",
    b"%u0070",
    b"%C0%AF",
    b"x:",
    b"https:",
    b"//",
    b"$batch",
    b"\\t",
    b"\\u00a0",
    b"\\u0000",
    b"{}",
    b"[]",
    b"null",
    b"0",
    b",",
    b"\0",
    b"\xff",
    b"m365Capabilities",
    b"identitySynchronization",
];

fn targets() -> [(&'static str, Check); 4] {
    [
        ("canonicaliser", fuzzing::canonicaliser),
        ("body_reader", fuzzing::body_reader),
        ("batch_parser", fuzzing::batch_parser),
        ("differential", fuzzing::differential),
    ]
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir` (sorted by name, so runs are reproducible), or none if it is missing.
fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Panics raised while running a check are collected as findings, not printed as they happen.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// Run one check on one input: how long it took, or the panic message.
fn run(check: Check, input: &[u8]) -> Result<Duration, String> {
    quiet_panics();
    QUIET.with(|q| q.set(true));
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|q| q.set(false));
    outcome.map(|()| started.elapsed()).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

#[test]
fn every_committed_corpus_input_passes_its_target_quickly() {
    let mut failures = Vec::new();
    for (name, check) in targets() {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(
            corpus.len() >= 5,
            "fuzz/corpus/{name} has {} inputs; seed it",
            corpus.len()
        );
        let mut slowest = Duration::ZERO;
        for (path, bytes) in &corpus {
            match run(check, bytes) {
                Ok(took) if took > SLOW_INPUT => {
                    failures.push(format!("{}: took {took:?}", path.display()));
                }
                Ok(took) => slowest = slowest.max(took),
                Err(message) => failures.push(format!("{}: {message}", path.display())),
            }
        }
        eprintln!(
            "{name}: {} corpus inputs replayed, slowest {slowest:?}",
            corpus.len()
        );
    }
    eprintln!("differential: {:?}", fuzzing::differential_counts());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small deterministic mutator (splitmix64), in the spirit of libFuzzer's: bit flips, byte
/// insertions from [`INTERESTING`], deletions, case flips, duplication and crossover.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    fn mutate(&mut self, input: &mut Vec<u8>, corpus: &[(PathBuf, Vec<u8>)]) {
        let at = self.below(input.len() + 1);
        match self.below(8) {
            0 if !input.is_empty() => {
                let i = self.below(input.len());
                input[i] ^= 1 << self.below(8);
            }
            1 | 2 => {
                let piece = INTERESTING[self.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            3 if !input.is_empty() => {
                let len = 1 + self.below(8.min(input.len() - at.min(input.len() - 1)));
                let start = at.min(input.len() - 1);
                input.drain(start..(start + len).min(input.len()));
            }
            4 if !input.is_empty() => {
                let i = self.below(input.len());
                input[i] = if input[i].is_ascii_lowercase() {
                    input[i].to_ascii_uppercase()
                } else {
                    input[i].to_ascii_lowercase()
                };
            }
            5 if !input.is_empty() => {
                let start = self.below(input.len());
                let len = 1 + self.below((input.len() - start).min(32));
                let chunk: Vec<u8> = input[start..start + len].to_vec();
                input.splice(at..at, chunk);
            }
            6 => {
                let other = &corpus[self.below(corpus.len())].1;
                if !other.is_empty() {
                    let start = self.below(other.len());
                    let len = 1 + self.below((other.len() - start).min(64));
                    input.splice(at..at, other[start..start + len].iter().copied());
                }
            }
            _ => {
                let byte = u8::try_from(self.next() & 0xFF).unwrap_or(0);
                if input.is_empty() {
                    input.push(byte);
                } else {
                    let i = self.below(input.len());
                    input[i] = byte;
                }
            }
        }
        input.truncate(MAX_LEN);
    }
}

/// The finding classes known to be open: `fuzz/findings/open-classes`, one per line, `#` comments.
fn open_classes() -> Vec<String> {
    fs::read_to_string(fuzz_dir().join("findings").join("open-classes"))
        .unwrap_or_default()
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The class of a finding's panic message (`finding[class]: …`); `None` for any other panic.
fn finding_class(message: &str) -> Option<&str> {
    message
        .strip_prefix("finding[")?
        .split_once("]:")
        .map(|(class, _)| class)
}

/// Mutate the committed corpus of `name` `iterations` times and collect what fails.
fn mutation_run(name: &str, check: Check, seed: u64, iterations: usize) {
    let corpus = inputs(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
    let open = open_classes();
    let mut known: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut mutator = Mutator(seed);
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..iterations {
        let mut input = corpus[mutator.below(corpus.len())].1.clone();
        for _ in 0..=mutator.below(4) {
            mutator.mutate(&mut input, &corpus);
        }
        match run(check, &input) {
            Ok(took) => slowest = slowest.max(took),
            Err(message)
                if finding_class(&message).is_some_and(|c| open.iter().any(|o| o == c)) =>
            {
                let class = finding_class(&message).unwrap_or_default().to_owned();
                let entry = known.entry(class).or_insert_with(|| (0, message.clone()));
                entry.0 += 1;
            }
            Err(message) if failures.len() < 5 => {
                failures.push(format!(
                    "{message}\n  input: {:?}",
                    input.escape_ascii().to_string()
                ));
            }
            Err(_) => {}
        }
    }
    eprintln!(
        "{name}: {iterations} mutated inputs in {:?} (slowest {slowest:?})",
        started.elapsed()
    );
    for (class, (count, example)) in &known {
        eprintln!("{name}: {count} findings of the open class {class}, e.g. {example}");
    }
    assert!(slowest <= SLOW_INPUT, "{name}: an input took {slowest:?}");
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

#[test]
fn mutating_the_canonicaliser_corpus_breaks_no_property() {
    mutation_run("canonicaliser", fuzzing::canonicaliser, 1, URL_ITERATIONS);
}

#[test]
fn mutating_the_body_reader_corpus_breaks_no_property() {
    mutation_run("body_reader", fuzzing::body_reader, 2, BODY_ITERATIONS);
}

#[test]
fn mutating_the_batch_parser_corpus_breaks_no_property() {
    mutation_run("batch_parser", fuzzing::batch_parser, 3, URL_ITERATIONS);
}

#[test]
fn mutating_the_differential_corpus_breaks_no_property() {
    mutation_run("differential", fuzzing::differential, 4, URL_ITERATIONS);
    eprintln!(
        "differential (cumulative in this process): {:?}",
        fuzzing::differential_counts()
    );
}

/// Open findings are replayed and reported (still failing, or fixed and ready to move into the
/// corpus); each must be described in `fuzz/findings/README.md`.
#[test]
fn recorded_findings_are_replayed_and_each_is_documented() {
    let readme =
        fs::read_to_string(fuzz_dir().join("findings").join("README.md")).unwrap_or_default();
    let mut undocumented = Vec::new();
    for (name, check) in targets() {
        for (path, bytes) in inputs(&fuzz_dir().join("findings").join(name)) {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !readme.contains(&format!("{name}/{file}")) {
                undocumented.push(format!("{name}/{file}"));
            }
            match run(check, &bytes) {
                Ok(_) => eprintln!("{name}/{file}: passes now (fixed? move it into the corpus)"),
                Err(message) => eprintln!(
                    "{name}/{file}: still open: {}",
                    message.lines().next().unwrap_or_default()
                ),
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "findings not described in fuzz/findings/README.md: {undocumented:?}"
    );
}
