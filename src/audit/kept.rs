//! The log checked against checkpoints kept elsewhere (`syncgate audit verify --checkpoint`,
//! issue 11): signed tree heads an auditor, a witness or another volume holds, which whoever can
//! write the database cannot change. Each one names a tree size and root; the log's tree at that
//! size must have that root.
//!
//! What an insider's moves look like from here, each reported by name:
//! - **truncated**: the log holds fewer events than a checkpoint signed (its tail was cut);
//! - **rewritten**: the log reaches the checkpoint's size but its tree there has another root
//!   (events up to that size were changed, and the chain re-computed so it still verifies). The
//!   change lies after the largest kept checkpoint that still matches;
//! - **forked**: two validly signed checkpoints of one size with different roots (two histories
//!   were shown to different people).
//!
//! The signatures are checked before this (`note::Verifier::open`): a checkpoint not signed by
//! the log's key never gets here.

use std::collections::BTreeMap;
use std::fmt;

use super::merkle::Hash;
use super::note::Checkpoint;

/// A checkpoint read from somewhere, with a name to report it by (its file).
#[derive(Debug, Clone)]
pub struct Kept {
    pub name: String,
    pub checkpoint: Checkpoint,
}

/// What one kept checkpoint says about the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The log's tree at this size has the checkpoint's root.
    Matches { name: String, size: u64 },
    /// The log holds `events`, fewer than the `size` the checkpoint signed.
    Truncated {
        name: String,
        size: u64,
        events: u64,
    },
    /// The log's tree at `size` has another root; the first changed event is after seq
    /// `matches_through` (the largest size a kept checkpoint still matches; 0 when none does)
    /// and at or before seq `size`.
    Rewritten {
        name: String,
        size: u64,
        matches_through: u64,
    },
    /// Two checkpoints of one size with different roots.
    Forked {
        name: String,
        other: String,
        size: u64,
    },
}

impl Finding {
    pub fn is_match(&self) -> bool {
        matches!(self, Finding::Matches { .. })
    }

    /// `matches`, `truncated`, `rewritten` or `forked`: the finding's name in the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Matches { .. } => "matches",
            Finding::Truncated { .. } => "truncated",
            Finding::Rewritten { .. } => "rewritten",
            Finding::Forked { .. } => "forked",
        }
    }

    /// The checkpoint's name.
    pub fn name(&self) -> &str {
        match self {
            Finding::Matches { name, .. }
            | Finding::Truncated { name, .. }
            | Finding::Rewritten { name, .. }
            | Finding::Forked { name, .. } => name,
        }
    }

    /// The tree size the checkpoint signs.
    pub fn size(&self) -> u64 {
        match self {
            Finding::Matches { size, .. }
            | Finding::Truncated { size, .. }
            | Finding::Rewritten { size, .. }
            | Finding::Forked { size, .. } => *size,
        }
    }
}

/// The findings that are not matches, in words.
pub fn problems(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| !f.is_match())
        .map(Finding::to_string)
        .collect()
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Matches { name, size } => {
                write!(f, "checkpoint {name} ({size} events) matches the log")
            }
            Finding::Truncated { name, size, events } => write!(
                f,
                "TRUNCATED: checkpoint {name} signed {size} events, the log holds {events}: \
                 its tail from seq {} was cut",
                events + 1
            ),
            Finding::Rewritten {
                name,
                size,
                matches_through,
            } => write!(
                f,
                "REWRITTEN: the log's first {size} events no longer have the root checkpoint \
                 {name} signed; the first changed event is after seq {matches_through} and at or \
                 before seq {size}"
            ),
            Finding::Forked { name, other, size } => write!(
                f,
                "FORKED: checkpoints {other} and {name} both sign {size} events, with different \
                 roots: two histories were shown"
            ),
        }
    }
}

/// Why kept checkpoints cannot be used: each names the checkpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeptError {
    #[error("{name} holds no signed checkpoint")]
    Empty { name: String },
    #[error("checkpoint {name} is not accepted: {source}")]
    NotAccepted {
        name: String,
        source: super::note::NoteError,
    },
    #[error("checkpoint {name} is for the log {found:?}, not {expected:?}")]
    OtherLog {
        name: String,
        found: String,
        expected: String,
    },
}

/// The checkpoints in `text` (one signed note, or several one after another as a file witness
/// appends them), each signed by `key` for the log `key` names. Each is named `name`, or
/// `name#i` when there are several.
pub fn read_notes(
    text: &str,
    key: &super::note::Verifier,
    name: &str,
) -> Result<Vec<Kept>, KeptError> {
    let notes = super::note::split_notes(text);
    if notes.is_empty() {
        return Err(KeptError::Empty { name: name.into() });
    }
    let several = notes.len() > 1;
    notes
        .into_iter()
        .enumerate()
        .map(|(i, note)| {
            let name = if several {
                format!("{name}#{}", i + 1)
            } else {
                name.to_owned()
            };
            let body = key.open(note).map_err(|source| KeptError::NotAccepted {
                name: name.clone(),
                source,
            })?;
            let checkpoint = Checkpoint::parse(body).map_err(|source| KeptError::NotAccepted {
                name: name.clone(),
                source,
            })?;
            if checkpoint.origin != key.name() {
                return Err(KeptError::OtherLog {
                    name,
                    found: checkpoint.origin,
                    expected: key.name().to_owned(),
                });
            }
            Ok(Kept { name, checkpoint })
        })
        .collect()
}

/// Each kept checkpoint against the log: `events` verified, and the log's tree root at each
/// kept size it reaches (`VerifyReport::roots_at`). In the order given.
pub fn assess(kept: &[Kept], events: u64, roots: &BTreeMap<u64, Hash>) -> Vec<Finding> {
    let matches = |k: &Kept| roots.get(&k.checkpoint.size) == Some(&k.checkpoint.root);
    let matches_through = kept
        .iter()
        .filter(|k| matches(k))
        .map(|k| k.checkpoint.size)
        .max()
        .unwrap_or(0);
    let mut seen: BTreeMap<u64, &Kept> = BTreeMap::new();
    let mut findings = Vec::new();
    for k in kept {
        let size = k.checkpoint.size;
        let name = k.name.clone();
        if let Some(other) = seen
            .get(&size)
            .filter(|o| o.checkpoint.root != k.checkpoint.root)
        {
            findings.push(Finding::Forked {
                name,
                other: other.name.clone(),
                size,
            });
            continue;
        }
        seen.entry(size).or_insert(k);
        findings.push(if size > events {
            Finding::Truncated { name, size, events }
        } else if matches(k) {
            Finding::Matches { name, size }
        } else {
            Finding::Rewritten {
                name,
                size,
                matches_through: matches_through.min(size),
            }
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::{Frontier, leaf_hash};

    /// Roots of a tree of `n` leaves at every size, as verify notes them.
    fn roots(leaves: &[&str]) -> BTreeMap<u64, Hash> {
        let mut tree = Frontier::new();
        let mut roots = BTreeMap::new();
        roots.insert(0, tree.root());
        for leaf in leaves {
            tree.push(leaf_hash(leaf.as_bytes()));
            roots.insert(tree.size(), tree.root());
        }
        roots
    }

    fn kept(name: &str, size: u64, roots: &BTreeMap<u64, Hash>) -> Kept {
        Kept {
            name: name.into(),
            checkpoint: Checkpoint {
                origin: "syncgate/test".into(),
                size,
                root: roots[&size],
                extensions: Vec::new(),
            },
        }
    }

    #[test]
    fn each_insider_move_is_named() {
        let honest = roots(&["a", "b", "c", "d", "e", "f"]);
        let at3 = kept("at-3", 3, &honest);
        let at6 = kept("at-6", 6, &honest);
        // The honest log matches both.
        assert!(
            assess(&[at3.clone(), at6.clone()], 6, &honest)
                .iter()
                .all(Finding::is_match)
        );
        // Its last event cut off.
        let cut = roots(&["a", "b", "c", "d", "e"]);
        assert_eq!(
            assess(&[at3.clone(), at6.clone()], 5, &cut)[1],
            Finding::Truncated {
                name: "at-6".into(),
                size: 6,
                events: 5
            }
        );
        // Rewritten from the fifth event on, re-chained, as long as before.
        let rewritten = roots(&["a", "b", "c", "d", "E", "f"]);
        let findings = assess(&[at3.clone(), at6.clone()], 6, &rewritten);
        assert!(findings[0].is_match());
        assert_eq!(
            findings[1],
            Finding::Rewritten {
                name: "at-6".into(),
                size: 6,
                matches_through: 3
            }
        );
        assert!(
            findings[1].to_string().contains("after seq 3"),
            "{}",
            findings[1]
        );
        // A second history of six events, signed too, shown to someone else.
        let other = roots(&["a", "b", "c", "x", "y", "z"]);
        let forked = kept("elsewhere", 6, &other);
        let findings = assess(&[at6.clone(), forked], 6, &honest);
        assert!(findings[0].is_match());
        assert_eq!(
            findings[1],
            Finding::Forked {
                name: "elsewhere".into(),
                other: "at-6".into(),
                size: 6
            }
        );
        // An empty checkpoint matches any log.
        assert!(assess(&[kept("empty", 0, &honest)], 6, &honest)[0].is_match());
    }
}
