//! Deleted items: deleted partners and deleted sync policies, listed, read and restored. Purges
//! are one state call each and stay in [`super::execute`].

use serde_json::Value;

use super::{DELETED_PARTNERS, DELETED_SYNC_POLICIES, collection, entity, partner_view};
use crate::emulator::odata::{Outcome, Projection, QueryOptions};
use crate::emulator::path::{TenantId, Version};
use crate::emulator::schema::{PARTNER, SYNC_POLICY};
use crate::emulator::state::State;

/// `GET …/deletedItems/crossTenantPartners`.
pub(super) fn list_partners(state: &State, version: Version, options: &QueryOptions) -> Outcome {
    let p = Projection::resolve(options, &PARTNER, version, true)?;
    let value = state
        .deleted_partners()
        .map(|doc| Value::Object(partner_view(doc, None, version, &p)))
        .collect();
    let fragment = format!("{DELETED_PARTNERS}{}", p.context_suffix());
    Ok(collection(version, &fragment, value))
}

/// `GET …/deletedItems/crossTenantPartners/{id}`.
pub(super) fn get_partner(
    state: &State,
    version: Version,
    options: &QueryOptions,
    id: &TenantId,
) -> Outcome {
    let p = Projection::resolve(options, &PARTNER, version, true)?;
    let view = partner_view(state.deleted_partner(id)?, None, version, &p);
    let fragment = format!("{DELETED_PARTNERS}{}/$entity", p.context_suffix());
    Ok(entity(version, &fragment, view))
}

/// `POST …/deletedItems/crossTenantPartners/{id}/restore`.
pub(super) fn restore_partner(state: &mut State, version: Version, id: &TenantId) -> Outcome {
    let shown = state.restore_partner(id)?;
    Ok(entity(
        version,
        "microsoft.graph.crossTenantAccessPolicyConfigurationPartner",
        PARTNER.view(&shown, version),
    ))
}

/// `GET …/deletedItems/crossTenantSyncPolicyPartners`.
pub(super) fn list_sync_policies(
    state: &State,
    version: Version,
    options: &QueryOptions,
) -> Outcome {
    let p = Projection::resolve(options, &SYNC_POLICY, version, false)?;
    let value = state
        .deleted_sync_policies()
        .map(|doc| Value::Object(p.apply(SYNC_POLICY.view(doc, version))))
        .collect();
    let fragment = format!("{DELETED_SYNC_POLICIES}{}", p.context_suffix());
    Ok(collection(version, &fragment, value))
}

/// `GET …/deletedItems/crossTenantSyncPolicyPartners/{id}`.
pub(super) fn get_sync_policy(
    state: &State,
    version: Version,
    options: &QueryOptions,
    id: &TenantId,
) -> Outcome {
    let p = Projection::resolve(options, &SYNC_POLICY, version, false)?;
    let doc = state.deleted_sync_policy(id)?;
    let fragment = format!("{DELETED_SYNC_POLICIES}{}/$entity", p.context_suffix());
    Ok(entity(
        version,
        &fragment,
        p.apply(SYNC_POLICY.view(doc, version)),
    ))
}

/// `POST …/deletedItems/crossTenantSyncPolicyPartners/{id}/restore`.
pub(super) fn restore_sync_policy(state: &mut State, version: Version, id: &TenantId) -> Outcome {
    let shown = state.restore_sync_policy(id)?;
    Ok(entity(
        version,
        "microsoft.graph.crossTenantIdentitySyncPolicyPartner",
        SYNC_POLICY.view(&shown, version),
    ))
}
