//! Target 4: the classifier against the emulator's URL parser and router, which stand in for
//! Graph: what the emulator would run as a governed write must be governed as that operation.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, Method};

use super::{Finding, UrlInput, finding, reachable, report, split_target};
use crate::classify::{self, ApiVersion, Classification, Governed, OperationKind, TenantId};
use crate::emulator::api::{self, Op};
use crate::emulator::path::{self, Resource, Version};

/// How often each pair of readings occurred, over every [`differential`] input so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DifferentialCounts {
    /// Inputs with a method and a `/`-rooted target.
    pub inputs: u64,
    /// The emulator runs a governed write and syncgate governs it as the same operation.
    pub both_govern: u64,
    /// The emulator runs a governed write (or a write below a partner) and syncgate refuses it:
    /// safe, but a request Graph would have served is refused.
    pub refused_emulator_write: u64,
    /// The emulator runs `$batch` and syncgate parses it as a batch.
    pub both_batch: u64,
    /// syncgate governs or refuses a request the emulator does not run as a governed write
    /// (refusing is safe; these are counted, not flagged).
    pub syncgate_only: u64,
    /// Neither sees a governed write.
    pub neither: u64,
}

static COUNTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The counts accumulated by [`differential`] in this process.
pub fn differential_counts() -> DifferentialCounts {
    let get = |i: usize| COUNTS[i].load(Ordering::Relaxed);
    DifferentialCounts {
        inputs: get(0),
        both_govern: get(1),
        refused_emulator_write: get(2),
        both_batch: get(3),
        syncgate_only: get(4),
        neither: get(5),
    }
}

fn count(index: usize) {
    COUNTS[index].fetch_add(1, Ordering::Relaxed);
}

/// `METHOD\0TARGET`: when the emulator (standing in for Graph) would run the request as a write
/// to a partner, a sync policy, the template or a deleted item, or as `$batch`, syncgate must
/// govern it as the same operation on the same partner and version, or refuse it. A write the
/// emulator does not model but routes below a partner (`partners/{k}/m365Capabilities`) must not
/// be forwarded either. The reverse (syncgate refuses what the emulator would not change) is
/// safe and only counted ([`differential_counts`]).
pub fn differential(data: &[u8]) {
    report(check_differential(data));
}

/// [`differential`], returning the finding instead of panicking.
pub fn check_differential(data: &[u8]) -> Result<(), Finding> {
    let Some(input) = UrlInput::parse(data) else {
        return Ok(());
    };
    let (path, query) = split_target(&input.target);
    if !path.starts_with('/') {
        return Ok(());
    }
    count(0);
    let expected = emulated(&input.method, path);
    let verdict = classify::classify(&input.method, path, query, &HeaderMap::new());
    compare(expected.as_ref(), &verdict).map_err(|class| {
        finding(
            class,
            format!(
                "{} {:?}: the emulator runs {expected:?}, syncgate classifies {verdict:?}{}",
                input.method,
                input.target,
                reachable(&input.target)
            ),
        )
    })
}

/// The emulator's reading of a request, when it changes something syncgate governs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emulated {
    /// A governed operation on a partner (`None` for a partner created from its body, and for
    /// the template).
    Write(OperationKind, Option<String>, ApiVersion),
    /// `POST /{v}/$batch`.
    Batch(ApiVersion),
    /// A write to a navigation the emulator does not model, below the partner given
    /// (`…/partners/{k}/m365Capabilities`): Graph would change the partner's configuration.
    BelowPartner(String, ApiVersion),
}

/// What the emulator's parser and router make of `method` and `raw_path`: `None` for reads and
/// for anything it refuses.
pub fn emulated(method: &Method, raw_path: &str) -> Option<Emulated> {
    let segments = path::segments(raw_path).ok()?;
    let version = path::version(segments.first().map(String::as_str)).ok()?;
    let api_version = match version {
        Version::V1 => ApiVersion::V1_0,
        Version::Beta => ApiVersion::Beta,
    };
    let rest = segments.get(1..).unwrap_or_default();
    let resource = path::resource(version, rest).ok()?;
    if resource == Resource::NotEmulated {
        let write = matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
        let partner =
            (1..rest.len())
                .rev()
                .find_map(|n| match path::resource(version, &rest[..n]) {
                    Ok(Resource::Partner(id)) => Some(id.as_str().to_owned()),
                    _ => None,
                });
        return partner
            .filter(|_| write)
            .map(|id| Emulated::BelowPartner(id, api_version));
    }
    let op = api::operation(resource, method).ok()?;
    let write = |kind, id: Option<path::TenantId>| {
        Some(Emulated::Write(
            kind,
            id.map(|id| id.as_str().to_owned()),
            api_version,
        ))
    };
    match op {
        Op::Batch => Some(Emulated::Batch(api_version)),
        Op::CreatePartner => write(OperationKind::PartnerCreate, None),
        Op::UpdatePartner(id) => write(OperationKind::PartnerUpdate, Some(id)),
        Op::DeletePartner(id) => write(OperationKind::PartnerDelete, Some(id)),
        Op::CreateSync(id) => write(OperationKind::SyncCreate, Some(id)),
        Op::UpdateSync(id) => write(OperationKind::SyncUpdate, Some(id)),
        Op::DeleteSync(id) => write(OperationKind::SyncDelete, Some(id)),
        Op::UpdateTemplate => write(OperationKind::TemplateUpdate, None),
        Op::ResetTemplate => write(OperationKind::TemplateReset, None),
        Op::RestorePartner(id) => write(OperationKind::PartnerRestore, Some(id)),
        Op::PurgePartner(id) => write(OperationKind::DeletedPartnerPurge, Some(id)),
        Op::RestoreDeletedPartnerSync(id) | Op::RestoreSyncPolicy(id) => {
            write(OperationKind::SyncRestore, Some(id))
        }
        Op::PurgeSyncPolicy(id) => write(OperationKind::DeletedSyncPurge, Some(id)),
        Op::GetAccessPolicy
        | Op::ListPartners
        | Op::GetPartner(_)
        | Op::GetSync(_)
        | Op::GetTemplate
        | Op::ListDeletedPartners
        | Op::GetDeletedPartner(_)
        | Op::GetDeletedPartnerSync(_)
        | Op::ListDeletedSyncPolicies
        | Op::GetDeletedSyncPolicy(_) => None,
    }
}

/// The differential verdict: `Err(class)` when syncgate lets through, or governs as something
/// else, what the emulator would run as a governed write or a batch. Counts every pair.
pub(crate) fn compare(
    expected: Option<&Emulated>,
    verdict: &Classification,
) -> Result<(), &'static str> {
    let forwarded = matches!(
        verdict,
        Classification::Forward | Classification::SyncRead(_)
    );
    let Some(expected) = expected else {
        count(if forwarded { 5 } else { 4 });
        return Ok(());
    };
    if matches!(verdict, Classification::Refuse(_)) {
        count(2);
        return Ok(());
    }
    match (expected, verdict) {
        (Emulated::Batch(v), Classification::Batch(w)) if v == w => {
            count(3);
            Ok(())
        }
        (Emulated::Batch(_), _) if forwarded => Err("batch-forwarded"),
        (Emulated::Write(kind, partner, v), Classification::Governed(g))
            if same_operation(g, *kind, partner.as_deref(), *v) =>
        {
            count(1);
            Ok(())
        }
        (Emulated::BelowPartner(partner, v), Classification::Governed(g))
            if g.path.version == *v
                && g.partner.as_ref().map(TenantId::as_str) == Some(partner) =>
        {
            count(1);
            Ok(())
        }
        (Emulated::BelowPartner(..), _) if forwarded => Err("partner-subnav-forwarded"),
        (Emulated::Write(..), _) if forwarded => Err("differential-write-forwarded"),
        _ => Err("differential-mismatch"),
    }
}

fn same_operation(
    governed: &Governed,
    kind: OperationKind,
    partner: Option<&str>,
    version: ApiVersion,
) -> bool {
    governed.kind == kind
        && governed.path.version == version
        && governed.partner.as_ref().map(TenantId::as_str) == partner
}
