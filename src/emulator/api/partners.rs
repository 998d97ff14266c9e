//! Partners and their `identitySynchronization` navigation: list, read, create (with an optional
//! deep insert of the sync policy), update (with an optional deep update) and the sync policy's
//! own PUT and PATCH. Deletes are one state call each and stay in [`super::execute`].

use http::StatusCode;
use serde_json::Value;

use super::{
    PARTNERS, bad_request, collection, drop_read_only, entity, entity_with_status, partner_view,
    read_only, same_tenant, sync_body,
};
use crate::emulator::odata::{Outcome, Projection, QueryOptions, Reply};
use crate::emulator::path::{TenantId, Version};
use crate::emulator::schema::{IDENTITY_SYNCHRONIZATION, PARTNER, SYNC_POLICY};
use crate::emulator::state::{self, State, SyncChange};
use crate::emulator::validate;

/// `GET …/partners`.
pub(super) fn list(state: &State, version: Version, options: &QueryOptions) -> Outcome {
    let p = Projection::resolve(options, &PARTNER, version, true)?;
    let value = state
        .partners()
        .map(|(id, doc)| Value::Object(partner_view(doc, state.sync_policy(id), version, &p)))
        .collect();
    let fragment = format!("{PARTNERS}{}", p.context_suffix());
    Ok(collection(version, &fragment, value))
}

/// `GET …/partners/{id}`.
pub(super) fn get(
    state: &State,
    version: Version,
    options: &QueryOptions,
    id: &TenantId,
) -> Outcome {
    let p = Projection::resolve(options, &PARTNER, version, true)?;
    let view = partner_view(state.partner(id)?, state.sync_policy(id), version, &p);
    let fragment = format!("{PARTNERS}{}/$entity", p.context_suffix());
    Ok(entity(version, &fragment, view))
}

/// `POST …/partners`: the tenant id comes from the body; an `identitySynchronization` member
/// creates the sync policy too.
pub(super) fn create(state: &mut State, version: Version, body: Value) -> Outcome {
    let Value::Object(mut members) = body else {
        return Err(validate::unreadable().into());
    };
    let deep_insert = members.remove(IDENTITY_SYNCHRONIZATION);
    let mut props = validate::check_entity(&PARTNER, Value::Object(members), version, "")?;
    let id = match props.remove("tenantId") {
        Some(Value::String(text)) => TenantId::parse(&text).ok_or_else(|| {
            bad_request(
                "Request_BadRequest",
                format!(
                    "Invalid value specified for property 'tenantId' of resource 'CrossTenantAccessPolicyConfigurationPartner'. '{text}' is not a GUID."
                ),
            )
        })?,
        _ => {
            return Err(bad_request(
                "Request_BadRequest",
                "Property 'tenantId' is required when creating a partner configuration.",
            )
            .into());
        }
    };
    drop_read_only(&PARTNER, &mut props, &PARTNER.blank())?;
    let sync = match deep_insert {
        None | Some(Value::Null) => None,
        Some(value) => Some(sync_body(value, &id, version, true, &SYNC_POLICY.blank())?),
    };
    state.create_partner(id.clone(), props, sync)?;
    let p = Projection::default();
    let mut view = partner_view(state.partner(&id)?, None, version, &p);
    // A deep insert's response carries what it created, as OData deep inserts do.
    if let Some(sync) = state.sync_policy(&id) {
        view.insert(
            IDENTITY_SYNCHRONIZATION.into(),
            Value::Object(SYNC_POLICY.view(sync, version)),
        );
    }
    Ok(entity_with_status(
        StatusCode::CREATED,
        version,
        &format!("{PARTNERS}/$entity"),
        view,
    ))
}

/// `PATCH …/partners/{id}`: an `identitySynchronization` member merges into the sync policy, or
/// deletes it when null.
pub(super) fn update(state: &mut State, version: Version, id: &TenantId, body: Value) -> Outcome {
    let Value::Object(mut members) = body else {
        return Err(validate::unreadable().into());
    };
    let deep_update = members.remove(IDENTITY_SYNCHRONIZATION);
    let mut props = validate::check_entity(&PARTNER, Value::Object(members), version, "")?;
    if let Some(key) = props.remove("tenantId")
        && !same_tenant(&key, id)
    {
        return Err(read_only("tenantId").into());
    }
    drop_read_only(&PARTNER, &mut props, state.partner(id)?)?;
    let sync = match deep_update {
        None => SyncChange::None,
        Some(Value::Null) => SyncChange::Delete,
        Some(value) => {
            let blank = SYNC_POLICY.blank();
            let current = state.sync_policy(id).unwrap_or(&blank);
            SyncChange::Merge(sync_body(value, id, version, true, current)?)
        }
    };
    state.update_partner(id, props, sync)?;
    Ok(Reply::no_content())
}

/// `GET …/partners/{id}/identitySynchronization`.
pub(super) fn get_sync(
    state: &State,
    version: Version,
    options: &QueryOptions,
    id: &TenantId,
) -> Outcome {
    let p = Projection::resolve(options, &SYNC_POLICY, version, false)?;
    let doc = state.sync_policy(id).ok_or_else(|| state::not_found(id))?;
    let fragment = format!(
        "{PARTNERS}('{id}')/identitySynchronization{}/$entity",
        p.context_suffix()
    );
    Ok(entity(
        version,
        &fragment,
        p.apply(SYNC_POLICY.view(doc, version)),
    ))
}

/// `PUT …/partners/{id}/identitySynchronization`.
pub(super) fn create_sync(
    state: &mut State,
    version: Version,
    id: &TenantId,
    body: Value,
) -> Outcome {
    let props = sync_body(body, id, version, false, &SYNC_POLICY.blank())?;
    state.create_sync_policy(id, props)?;
    Ok(Reply::no_content())
}

/// `PATCH …/partners/{id}/identitySynchronization`.
pub(super) fn update_sync(
    state: &mut State,
    version: Version,
    id: &TenantId,
    body: Value,
) -> Outcome {
    let blank = SYNC_POLICY.blank();
    let current = state.sync_policy(id).unwrap_or(&blank);
    let props = sync_body(body, id, version, false, current)?;
    state.update_sync_policy(id, props)?;
    Ok(Reply::no_content())
}
