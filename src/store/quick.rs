//! Quick verification against signed checkpoints (`syncgate audit verify --quick --key VKEY`).
//!
//! A signed checkpoint commits to the exact bytes of every event up to its size (they are the
//! tree's leaves). So the events up to the largest checkpoint that still matches need no more
//! than one pass of hashing: each row's stored text is hashed as a leaf (and as a chain link,
//! which checks the `hash` and `prev_hash` columns too), with nothing parsed. Only the events
//! after it, which no signature covers yet, get the full check (canonical form, filter
//! columns, a valid event). What the quick pass leaves out, and says so: the filter columns of
//! the signed events and the operations index, both derived copies that the full verification
//! checks.
//!
//! On SQLite the pass reads each page as one aggregated row (`page_query`: a driver's cost per
//! row was most of the pass's time), and reads the next page while it hashes the last one on a
//! blocking thread, so the database and the hashing overlap. On PostgreSQL the rows stream
//! with a binary COPY to the hashing thread (`postgres/quick.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::chain::{Broken, Head, Verifier};
use super::{ReadBackend, StoreError, StoreReader};
use crate::audit::merkle::{Frontier, Hash, leaf_hash};
use sha2::{Digest, Sha256};

/// Rows per page of the quick pass.
pub(crate) const QUICK_PAGE: i64 = 2000;

/// Separators of the aggregated page: control characters, which canonical JSON never holds
/// unescaped, nor hex hashes, nor a seq. A stored text that holds one anyway is refused
/// ([`split_page`]), so that no row can pass for two.
const FIELD: char = '\u{1f}';
const RECORD: char = '\u{1e}';

/// The quick pass's page on SQLite as one row: how many rows, and their seq, prev_hash, hash
/// and text joined by [`FIELD`] and [`RECORD`], in seq order. One row instead of thousands: the
/// database driver's cost per row was most of the pass's time. (PostgreSQL streams the rows
/// with COPY instead: `postgres/quick.rs`.)
pub(crate) fn page_query<'a>(after: i64, limit: i64) -> sqlx::QueryBuilder<'a, sqlx::Sqlite> {
    // SQLite aggregates the ordered subquery's rows in the order it yields them, and an ORDER
    // BY inside the aggregate would copy every row into a temporary b-tree first (it tripled
    // the pass's time). A page out of order could only fail the check (each seq must follow
    // the last), never pass it.
    let mut q = sqlx::QueryBuilder::new(
        "SELECT count(*) AS rows, group_concat(seq || char(31) || prev_hash || char(31) || \
         hash || char(31) || event, char(30)) AS page \
         FROM (SELECT seq, prev_hash, hash, event FROM audit_events WHERE seq > ",
    );
    q.push_bind(after)
        .push(" ORDER BY seq LIMIT ")
        .push_bind(limit)
        .push(") AS p");
    q
}

/// One aggregated page as read: how many rows it holds, and their fields joined.
pub(crate) struct RawPage {
    pub(crate) rows: i64,
    pub(crate) text: String,
}

impl RawPage {
    /// The last row's seq, where the next page starts (read before the page is hashed, so the
    /// next read overlaps the hashing).
    pub(crate) fn last_seq(&self) -> Result<i64, StoreError> {
        let last = self.text.rsplit(RECORD).next().unwrap_or("");
        let seq = last.split(FIELD).next().unwrap_or("");
        seq.parse()
            .map_err(|_| StoreError::corrupt(format!("a stored seq {seq:?} is not a number")))
    }
}

/// The rows of an aggregated page, borrowed from it, refusing a page whose count is not its
/// `rows` or a record that does not split into exactly four fields (a stored text holding a
/// separator).
pub(crate) fn split_page(page: &RawPage) -> Result<Vec<RawLink<'_>>, StoreError> {
    if page.rows == 0 {
        return Ok(Vec::new());
    }
    let mut links = Vec::with_capacity(page.rows as usize);
    for record in page.text.split(RECORD) {
        let mut fields = record.split(FIELD);
        let (Some(seq), Some(prev_hash), Some(hash), Some(event), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(StoreError::corrupt(format!(
                "a stored event after seq {} holds a control character no canonical event \
                 holds",
                links.last().map_or(0, |l: &RawLink<'_>| l.seq)
            )));
        };
        let seq: i64 = seq
            .parse()
            .map_err(|_| StoreError::corrupt(format!("a stored seq {seq:?} is not a number")))?;
        links.push(RawLink {
            seq,
            event,
            prev_hash,
            hash,
        });
    }
    if links.len() as i64 != page.rows {
        return Err(StoreError::corrupt(format!(
            "the {} rows after seq {} read as {} events: a stored event holds a control \
             character no canonical event holds",
            page.rows,
            links.first().map_or(0, |l| l.seq - 1),
            links.len()
        )));
    }
    Ok(links)
}

/// One row as the quick pass reads it, borrowed from its page.
pub(crate) struct RawLink<'p> {
    pub(crate) seq: i64,
    pub(crate) event: &'p str,
    pub(crate) prev_hash: &'p str,
    pub(crate) hash: &'p str,
}

/// What the quick pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuickReport {
    /// Events whose link and leaf were checked (all of them when `first_broken` is `None`).
    pub(crate) events: u64,
    pub(crate) first_broken: Option<Broken>,
    /// The tree's root and the chain's head at each size asked for that the log reaches.
    pub(crate) roots_at: BTreeMap<u64, Hash>,
    pub(crate) heads_at: BTreeMap<u64, String>,
    /// The last link checked.
    pub(crate) head: Head,
}

/// The quick pass's state: the chain's head and the tree so far.
#[derive(Debug, Clone)]
pub(crate) struct QuickCheck {
    head: Head,
    tree: Frontier,
    sizes: BTreeSet<u64>,
    roots: BTreeMap<u64, Hash>,
    heads: BTreeMap<u64, String>,
}

impl QuickCheck {
    pub(crate) fn new(sizes: &[u64]) -> QuickCheck {
        QuickCheck {
            head: Head::empty(),
            tree: Frontier::new(),
            sizes: sizes.iter().copied().collect(),
            roots: BTreeMap::new(),
            heads: BTreeMap::new(),
        }
    }

    /// Check a page of rows, in order; the first broken one. (Hashing a page on two threads
    /// was measured on this 2-core machine: slower, and more CPU, as the database's reading and
    /// the SHA-NI units were shared already.)
    pub(crate) fn page(&mut self, rows: &[RawLink<'_>]) -> Result<(), Broken> {
        for row in rows {
            self.follow(row, &hash_row(row))?;
        }
        Ok(())
    }

    /// Check that `row`, whose hashes are `hashes`, follows the last link, and take it in.
    fn follow(&mut self, row: &RawLink<'_>, hashes: &RowHashes) -> Result<(), Broken> {
        let recomputed = std::str::from_utf8(&hashes.link)
            .unwrap_or_else(|_| unreachable!("hex digits are ASCII"));
        self.head
            .check_link(row.seq, row.prev_hash, row.hash, recomputed)
            .map_err(|reason| Broken {
                seq: row.seq,
                event_id: String::new(),
                reason,
            })?;
        self.tree.push(hashes.leaf);
        self.head.seq = row.seq;
        self.head.hash.clear();
        self.head.hash.push_str(row.hash);
        let size = self.tree.size();
        if self.sizes.contains(&size) {
            self.roots.insert(size, self.tree.root());
            self.heads.insert(size, row.hash.to_owned());
        }
        Ok(())
    }

    pub(crate) fn report(self, first_broken: Option<Broken>) -> QuickReport {
        QuickReport {
            events: self.tree.size(),
            first_broken,
            roots_at: self.roots,
            heads_at: self.heads,
            head: self.head,
        }
    }
}

/// What one row hashes to: its chain link (`link_hash`, in hex) and its Merkle leaf.
struct RowHashes {
    link: [u8; 64],
    leaf: Hash,
}

fn hash_row(row: &RawLink<'_>) -> RowHashes {
    // `link_hash`, without a String per row: the digest's hex in a buffer.
    let mut digest = Sha256::new();
    digest.update(row.prev_hash.as_bytes());
    digest.update(row.event.as_bytes());
    let mut link = [0u8; 64];
    hex::encode_to_slice(digest.finalize(), &mut link)
        .unwrap_or_else(|_| unreachable!("64 hex digits for 32 bytes"));
    RowHashes {
        link,
        leaf: leaf_hash(row.event.as_bytes()),
    }
}

/// Pages read ahead of the hashing on SQLite: enough that one slow page on either side does
/// not idle the other.
const PAGES_AHEAD: usize = 2;

/// Why the hashing stopped before what was read ran out.
pub(crate) enum Stop {
    Broken(Broken),
    Corrupt(StoreError),
}

/// The quick pass's two halves at once: `reading` sends what it reads to `received`, and a
/// blocking thread takes each in turn into a [`QuickCheck`] with `check`, until the reading
/// ends or `check` stops (then the reading's next send fails, and it stops too). A broken link
/// or a malformed row is the answer, whatever the reading then met.
pub(crate) async fn hash_while_reading<P: Send + 'static>(
    sizes: &[u64],
    mut received: tokio::sync::mpsc::Receiver<P>,
    mut check: impl FnMut(P, &mut QuickCheck) -> Result<(), Stop> + Send + 'static,
    reading: impl std::future::Future<Output = Result<(), StoreError>>,
) -> Result<QuickReport, StoreError> {
    let mut state = QuickCheck::new(sizes);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut result = Ok(());
        while let Some(piece) = received.blocking_recv() {
            result = check(piece, &mut state);
            if result.is_err() {
                break;
            }
        }
        (state, result)
    });
    let read = reading.await;
    let (state, hashed) = hashing.await.map_err(|e| StoreError::Internal {
        context: format!("the hashing thread failed: {e}"),
        source: None,
    })?;
    match hashed {
        Err(Stop::Broken(broken)) => Ok(state.report(Some(broken))),
        Err(Stop::Corrupt(error)) => Err(error),
        Ok(()) => read.map(|()| state.report(None)),
    }
}

impl StoreReader {
    /// The quick pass over the whole log, noting the tree's root and the chain's head at each
    /// of `sizes`.
    pub(crate) async fn verify_quickly(&self, sizes: &[u64]) -> Result<QuickReport, StoreError> {
        let sqlite = match &self.backend {
            ReadBackend::Postgres(r) => return r.quick_pass(sizes).await,
            ReadBackend::Sqlite(r) => r,
        };
        let (pages, received) = tokio::sync::mpsc::channel(PAGES_AHEAD);
        let reading = async move {
            let mut after = 0;
            loop {
                let page = sqlite.raw_links(after, QUICK_PAGE).await?;
                if page.rows == 0 {
                    return Ok(());
                }
                after = page.last_seq()?;
                if pages.send(page).await.is_err() {
                    return Ok(()); // The hashing stopped.
                }
            }
        };
        let check = |page: RawPage, check: &mut QuickCheck| {
            let links = split_page(&page).map_err(Stop::Corrupt)?;
            check.page(&links).map_err(Stop::Broken)
        };
        hash_while_reading(sizes, received, check, reading).await
    }

    /// The full check (as `verify`) of the events after `from`, a link already verified:
    /// how many verified, and the first broken one.
    pub(crate) async fn verify_after(
        &self,
        from: Head,
    ) -> Result<(u64, Option<Broken>), StoreError> {
        let mut verifier = Verifier::after(from.clone());
        let mut after = from.seq;
        loop {
            let rows = self.page(after).await?;
            if rows.is_empty() {
                return Ok((verifier.events(), None));
            }
            for row in rows {
                let checked = row.and_then(|row| {
                    after = row.seq;
                    verifier.check(&row)
                });
                if let Err(broken) = checked {
                    return Ok((verifier.events(), Some(broken)));
                }
            }
        }
    }
}

/// What a quick verification against signed checkpoints found (`StoreReader::verify_signed`).
#[derive(Debug, Clone)]
pub(crate) struct SignedVerification {
    pub(crate) pass: QuickReport,
    /// Every checkpoint judged (those kept elsewhere, then those stored in the log), in order.
    pub(crate) findings: Vec<crate::audit::kept::Finding>,
    /// How many checkpoints the log stores, and the sizes of those not signed by the key.
    pub(crate) stored: usize,
    pub(crate) forged: Vec<u64>,
    /// The events the signatures cover: the largest size a checkpoint matches (0: none).
    pub(crate) covered: u64,
    /// The events after `covered`, checked in full: how many verified, the first broken.
    pub(crate) tail: (u64, Option<Broken>),
}

impl SignedVerification {
    /// Whether the log holds: every link and leaf, every checkpoint, the unsigned tail.
    pub(crate) fn ok(&self) -> bool {
        self.pass.first_broken.is_none()
            && self.forged.is_empty()
            && self
                .findings
                .iter()
                .all(crate::audit::kept::Finding::is_match)
            && self.tail.1.is_none()
    }
}

impl StoreReader {
    /// Verify the log against `kept` (checkpoints kept elsewhere) and the checkpoints stored in
    /// it that `key` signed: one hashing pass over every event, then the full check of the
    /// events no matching checkpoint covers. A stored checkpoint `key` did not sign is named
    /// (`forged`), not trusted.
    pub(crate) async fn verify_signed(
        &self,
        key: &crate::audit::note::Verifier,
        mut kept: Vec<crate::audit::kept::Kept>,
    ) -> Result<SignedVerification, StoreError> {
        use crate::audit::kept::{Kept, assess};
        use crate::audit::note::Checkpoint;
        let mut stored = Vec::new();
        if self.has_tree().await? {
            let mut at_most = Some(u64::MAX);
            while let Some(below) = at_most {
                let page = self.checkpoints(below, 1000).await?;
                at_most = super::tree::next_below(&page);
                stored.extend(page);
            }
        }
        let mut forged = Vec::new();
        let count = stored.len();
        for checkpoint in stored.into_iter().rev() {
            let signed = key
                .open(&checkpoint.note)
                .ok()
                .and_then(|body| Checkpoint::parse(body).ok())
                .filter(|c| {
                    c.origin == key.name() && c.size == checkpoint.size && c.root == checkpoint.root
                });
            match signed {
                Some(signed) => kept.push(Kept {
                    name: format!("stored in the log at {} events", signed.size),
                    checkpoint: signed,
                }),
                None => forged.push(checkpoint.size),
            }
        }
        let sizes: Vec<u64> = kept.iter().map(|k| k.checkpoint.size).collect();
        let pass = self.verify_quickly(&sizes).await?;
        let mut verification = SignedVerification {
            findings: Vec::new(),
            stored: count,
            forged,
            covered: 0,
            tail: (0, None),
            pass,
        };
        if verification.pass.first_broken.is_some() {
            return Ok(verification);
        }
        let pass = &verification.pass;
        verification.findings = assess(&kept, pass.events, &pass.roots_at);
        if !verification.ok() {
            return Ok(verification);
        }
        let covered = verification
            .findings
            .iter()
            .filter(|f| f.is_match())
            .map(crate::audit::kept::Finding::size)
            .max()
            .unwrap_or(0);
        let from = match pass.heads_at.get(&covered) {
            Some(hash) => Head {
                seq: covered as i64,
                hash: hash.clone(),
            },
            None => Head::empty(),
        };
        verification.covered = from.seq as u64;
        verification.tail = self.verify_after(from).await?;
        Ok(verification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::{GENESIS, link_hash};

    /// A chained page of `texts`, as the database would aggregate it.
    fn chain(texts: &[&str]) -> RawPage {
        let mut prev = GENESIS.to_owned();
        let records: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let hash = link_hash(&prev, text);
                let record = format!("{}{FIELD}{prev}{FIELD}{hash}{FIELD}{text}", i + 1);
                prev = hash;
                record
            })
            .collect();
        RawPage {
            rows: texts.len() as i64,
            text: records.join(&RECORD.to_string()),
        }
    }

    #[test]
    fn a_page_splits_into_its_rows_and_no_row_passes_for_two() {
        let page = chain(&["{}", "{\"a\":1}"]);
        let links = split_page(&page).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!((links[1].seq, links[1].event), (2, "{\"a\":1}"));
        assert_eq!(links[1].prev_hash, links[0].hash);
        assert_eq!(page.last_seq().unwrap(), 2);
        // Row 1's text forged to hold row 2 as well: one row read as two is refused.
        let forged = RawPage {
            rows: 1,
            text: page.text.clone(),
        };
        assert!(split_page(&forged).is_err());
        // A field separator inside a text is refused.
        let forged = RawPage {
            rows: 1,
            text: format!("1{FIELD}p{FIELD}h{FIELD}{{}}{FIELD}x"),
        };
        assert!(split_page(&forged).is_err());
        let empty = RawPage {
            rows: 0,
            text: String::new(),
        };
        assert!(split_page(&empty).unwrap().is_empty());
    }

    #[test]
    fn the_quick_pass_notes_roots_and_heads_and_names_a_broken_link() {
        let texts = ["{\"seq\":1}", "{\"seq\":2}", "{\"seq\":3}"];
        let page = chain(&texts);
        let rows = split_page(&page).unwrap();
        let mut check = QuickCheck::new(&[2, 3, 9]);
        check.page(&rows).unwrap();
        let report = check.report(None);
        assert_eq!(report.events, 3);
        let mut tree = Frontier::new();
        tree.push(leaf_hash(texts[0].as_bytes()));
        tree.push(leaf_hash(texts[1].as_bytes()));
        assert_eq!(report.roots_at[&2], tree.root());
        assert_eq!(report.heads_at[&2], rows[1].hash);
        assert_eq!(report.head.hash, rows[2].hash);
        assert!(!report.roots_at.contains_key(&9));

        let mut edited = split_page(&page).unwrap();
        edited[1].event = "{\"seq\":22}";
        let broken = QuickCheck::new(&[]).page(&edited).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(
            broken.reason.contains("does not match the stored event"),
            "{}",
            broken.reason
        );
        let mut gap = split_page(&page).unwrap();
        gap.remove(1);
        let broken = QuickCheck::new(&[]).page(&gap).unwrap_err();
        assert_eq!(broken.seq, 3);
    }
}
