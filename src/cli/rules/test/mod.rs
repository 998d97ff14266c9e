//! `syncgate rules test`: suites of cases, each a change with its context and the decision
//! expected, run through a configuration's rules as the proxy would run them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

use super::{TestArgs, load_rules};
use crate::cli::render::{print, short_version};
use crate::rules::RuleSet;

mod case;
mod pattern;
mod request;

use case::Case;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    /// The configuration whose rules are tested, relative to the suite file.
    config: Option<PathBuf>,
    /// Keys every case takes unless it sets them itself (see [`DEFAULTABLE`]).
    #[serde(default)]
    defaults: toml::Table,
    /// The cases, with where each starts in the file.
    #[serde(default)]
    case: Vec<toml::Spanned<toml::Table>>,
}

/// The case keys `[defaults]` may set: the change's context, never what a case expects.
const DEFAULTABLE: [&str; 10] = [
    "operation",
    "method",
    "canonical_path",
    "api_version",
    "partner",
    "body",
    "before",
    "partner_state",
    "actor",
    "time",
];

/// A suite, validated: its rules' configuration and its cases.
struct Suite {
    path: PathBuf,
    config: PathBuf,
    cases: Vec<Case>,
}

impl Suite {
    /// Read and validate `path`; `config` (from the command line) wins over the suite's own.
    fn load(path: &Path, config: Option<&Path>) -> anyhow::Result<Suite> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let raw: RawSuite = toml::from_str(&text)
            .with_context(|| format!("invalid rules test suite {}", path.display()))?;
        let shown = path.display();
        let config = match (config, &raw.config) {
            (Some(config), _) => config.to_owned(),
            (None, Some(own)) => path.parent().unwrap_or(Path::new(".")).join(own),
            (None, None) => bail!(
                "{shown}: names no rules to test: add config = \"<configuration file>\" (relative \
                 to the suite) or pass --config"
            ),
        };
        if let Some(key) = raw
            .defaults
            .keys()
            .find(|k| !DEFAULTABLE.contains(&k.as_str()))
        {
            bail!(
                "{shown}: [defaults]: unknown key `{key}` (defaults may set: {})",
                DEFAULTABLE.join(", ")
            );
        }
        if raw.case.is_empty() {
            bail!("{shown}: has no [[case]] tables");
        }
        let mut names = BTreeSet::new();
        let mut cases = Vec::with_capacity(raw.case.len());
        for (index, spanned) in raw.case.into_iter().enumerate() {
            let line = text
                .get(..spanned.span().start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            let mut table = spanned.into_inner();
            let name = table
                .get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_owned);
            let place = match &name {
                Some(name) => format!("{shown}: case {} {name:?} (line {line})", index + 1),
                None => format!("{shown}: case {} (line {line})", index + 1),
            };
            for (key, value) in &raw.defaults {
                table.entry(key).or_insert_with(|| value.clone());
            }
            let case = Case::from_raw(table, line).map_err(|why| anyhow!("{place}: {why}"))?;
            if !names.insert(case.name.clone()) {
                bail!("{place}: another case has the same name; names identify failures");
            }
            cases.push(case);
        }
        Ok(Suite {
            path: path.to_owned(),
            config,
            cases,
        })
    }
}

pub(super) fn run(args: TestArgs) -> anyhow::Result<()> {
    let suites = args
        .files
        .iter()
        .map(|file| Suite::load(file, args.config.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut loaded: BTreeMap<PathBuf, RuleSet> = BTreeMap::new();
    for suite in &suites {
        if !loaded.contains_key(&suite.config) {
            let (_, rules) = load_rules(&suite.config).with_context(|| match &args.config {
                Some(_) => "the rules given with --config".to_owned(),
                None => format!("the rules {} names", suite.path.display()),
            })?;
            loaded.insert(suite.config.clone(), rules);
        }
    }
    let mut out = String::new();
    let (mut total, mut failed) = (0usize, 0usize);
    for suite in &suites {
        let Some(rules) = loaded.get(&suite.config) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{}  (rules {}, version {})",
            suite.path.display(),
            suite.config.display(),
            short_version(rules.version())
        );
        for case in &suite.cases {
            total += 1;
            let verdict = rules.evaluate(&case.input(rules)).verdict();
            let problems = case.check(&verdict, rules);
            if problems.is_empty() {
                let _ = writeln!(out, "  ok    {}", case.name);
                continue;
            }
            failed += 1;
            let _ = writeln!(out, "  FAIL  {} (line {})", case.name, case.line);
            for line in problems {
                let _ = writeln!(out, "          {line}");
            }
        }
    }
    let files = match suites.len() {
        1 => "1 file".to_owned(),
        n => format!("{n} files"),
    };
    let _ = writeln!(
        out,
        "{total} cases: {} passed, {failed} failed ({files}).",
        total - failed
    );
    print(&out)?;
    if failed > 0 {
        bail!("{failed} of {total} rule test cases failed");
    }
    Ok(())
}
