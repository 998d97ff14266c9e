//! The one tenant's directory objects and the rules that tie them together (§3, §10).
//!
//! Documents are stored in their beta shape (every property, null when unset) and keyed by
//! lower-case tenant id; each API version reads its own view of the same object. Invariants the
//! operations keep:
//!
//! - a sync policy lives only under a live partner (PUT needs the partner; partner DELETE needs
//!   the sync policy gone), so a deleted partner never has one;
//! - a tenant id is live or soft-deleted, never both, for partners; re-creating a soft-deleted
//!   partner conflicts until it is restored or purged ([I], §11 q6);
//! - deletes are soft, whatever the version: v1.0 and beta address the same directory object, and
//!   beta can see what a v1.0 DELETE left behind.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::path::TenantId;
use super::schema::{PARTNER, SYNC_POLICY, TEMPLATE};
use crate::graph_error::GraphError;

pub(crate) type Doc = Map<String, Value>;

/// The template's id: any fixed GUID (the docs show a different one per tenant).
const TEMPLATE_ID: &str = "0e7aad84-cb46-4b8e-a881-522ef25939f1";

/// What a partner PATCH asks of the partner's sync policy (deep update, §7 rule 8).
#[derive(Debug)]
pub(crate) enum SyncChange {
    None,
    /// Merge into the policy, creating it when absent.
    Merge(Doc),
    /// `"identitySynchronization": null`: remove it (soft delete), as OData's deep update reads it.
    Delete,
}

#[derive(Debug)]
pub(crate) struct State {
    partners: BTreeMap<TenantId, Doc>,
    sync_policies: BTreeMap<TenantId, Doc>,
    deleted_partners: BTreeMap<TenantId, Doc>,
    deleted_sync_policies: BTreeMap<TenantId, Doc>,
    template: Doc,
    /// Successful state-changing Graph calls, so a test can prove a call never arrived.
    pub(crate) writes: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            partners: BTreeMap::new(),
            sync_policies: BTreeMap::new(),
            deleted_partners: BTreeMap::new(),
            deleted_sync_policies: BTreeMap::new(),
            template: default_template(),
            writes: 0,
        }
    }
}

fn default_template() -> Doc {
    let mut doc = TEMPLATE.blank();
    TEMPLATE.merge(
        &mut doc,
        object(json!({
            "id": TEMPLATE_ID,
            "templateApplicationLevel": "newPartners,existingPartners",
            "userSyncInbound": {"isSyncAllowed": null},
        })),
    );
    doc
}

fn object(value: Value) -> Doc {
    match value {
        Value::Object(map) => map,
        _ => Doc::new(),
    }
}

/// `deletedDateTime` as the beta samples write it: UTC, seconds, `Z`.
fn now() -> Value {
    Value::String(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

pub(crate) fn not_found(id: &TenantId) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn duplicate_tenant() -> GraphError {
    GraphError::new(
        StatusCode::CONFLICT,
        "Request_MultipleObjectsWithSameKeyValue",
        "Another object with the same value for property tenantId already exists.",
    )
}

fn conflicting_sync_policy() -> GraphError {
    let message = "A conflicting object with one or more of the specified property values is present in the directory.";
    GraphError::new(
        StatusCode::CONFLICT,
        "Request_MultipleObjectsWithSameKeyValue",
        message,
    )
    .with_details(vec![
        json!({"code": "ConflictingObjects", "message": message}),
    ])
}

impl State {
    pub(crate) fn partner(&self, id: &TenantId) -> Result<&Doc, GraphError> {
        self.partners.get(id).ok_or_else(|| not_found(id))
    }

    pub(crate) fn partners(&self) -> impl Iterator<Item = (&TenantId, &Doc)> {
        self.partners.iter()
    }

    pub(crate) fn sync_policy(&self, id: &TenantId) -> Option<&Doc> {
        self.sync_policies.get(id)
    }

    /// POST partners: `props` are checked members without `tenantId`; `sync` a deep insert.
    pub(crate) fn create_partner(
        &mut self,
        id: TenantId,
        props: Doc,
        sync: Option<Doc>,
    ) -> Result<(), GraphError> {
        if self.partners.contains_key(&id) || self.deleted_partners.contains_key(&id) {
            return Err(duplicate_tenant());
        }
        let mut doc = PARTNER.blank();
        doc.insert("tenantId".into(), Value::String(id.to_string()));
        // Real POST responses show these two as objects of nulls, not null (§4.3).
        let unset = json!({"inboundAllowed": null, "outboundAllowed": null});
        doc.insert("crossCloudMeetingConfiguration".into(), unset.clone());
        doc.insert("automaticUserConsentSettings".into(), unset);
        PARTNER.merge(&mut doc, props);
        if let Some(sync) = sync {
            self.sync_policies
                .insert(id.clone(), new_sync_policy(&id, sync));
        }
        self.partners.insert(id, doc);
        Ok(())
    }

    pub(crate) fn update_partner(
        &mut self,
        id: &TenantId,
        patch: Doc,
        sync: SyncChange,
    ) -> Result<(), GraphError> {
        let doc = self.partners.get_mut(id).ok_or_else(|| not_found(id))?;
        PARTNER.merge(doc, patch);
        match sync {
            SyncChange::None => {}
            SyncChange::Merge(part) => match self.sync_policies.get_mut(id) {
                Some(current) => SYNC_POLICY.merge(current, part),
                None => {
                    self.sync_policies
                        .insert(id.clone(), new_sync_policy(id, part));
                }
            },
            SyncChange::Delete => {
                if self.sync_policies.contains_key(id) {
                    self.delete_sync_policy(id)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn delete_partner(&mut self, id: &TenantId) -> Result<(), GraphError> {
        if !self.partners.contains_key(id) {
            return Err(not_found(id));
        }
        if self.sync_policies.contains_key(id) {
            // Documented precondition (§2.3); the real error is undocumented.
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                format!(
                    "The partner configuration for tenant '{id}' has an identitySynchronization policy. Delete the identitySynchronization policy before deleting the partner configuration."
                ),
            ));
        }
        if let Some(mut doc) = self.partners.remove(id) {
            doc.insert("deletedDateTime".into(), now());
            self.deleted_partners.insert(id.clone(), doc);
        }
        Ok(())
    }

    /// PUT identitySynchronization: create-only (§3.1).
    pub(crate) fn create_sync_policy(
        &mut self,
        id: &TenantId,
        props: Doc,
    ) -> Result<(), GraphError> {
        if !self.partners.contains_key(id) {
            return Err(not_found(id));
        }
        if self.sync_policies.contains_key(id) {
            return Err(conflicting_sync_policy());
        }
        // A soft-deleted copy may remain; it stays restorable-in-principle (restore then
        // conflicts with the live one). Blocking re-creation would leave v1.0 clients, which
        // cannot purge, unable to ever recreate a policy — an [I] choice, §11.
        self.sync_policies
            .insert(id.clone(), new_sync_policy(id, props));
        Ok(())
    }

    pub(crate) fn update_sync_policy(
        &mut self,
        id: &TenantId,
        patch: Doc,
    ) -> Result<(), GraphError> {
        let Some(doc) = self.sync_policies.get_mut(id) else {
            // ENTRA-CFG's symptom for PATCH before PUT; the status is an [I] (§3.1).
            return Err(GraphError::new(
                StatusCode::NOT_FOUND,
                "Directory_ObjectNotFound",
                "Unable to read the company information from the directory.",
            ));
        };
        SYNC_POLICY.merge(doc, patch);
        Ok(())
    }

    pub(crate) fn delete_sync_policy(&mut self, id: &TenantId) -> Result<(), GraphError> {
        let mut doc = self.sync_policies.remove(id).ok_or_else(|| not_found(id))?;
        doc.insert("deletedDateTime".into(), now());
        self.deleted_sync_policies.insert(id.clone(), doc);
        Ok(())
    }

    pub(crate) fn deleted_partner(&self, id: &TenantId) -> Result<&Doc, GraphError> {
        self.deleted_partners.get(id).ok_or_else(|| not_found(id))
    }

    pub(crate) fn deleted_partners(&self) -> impl Iterator<Item = &Doc> {
        self.deleted_partners.values()
    }

    pub(crate) fn deleted_sync_policy(&self, id: &TenantId) -> Result<&Doc, GraphError> {
        self.deleted_sync_policies
            .get(id)
            .ok_or_else(|| not_found(id))
    }

    pub(crate) fn deleted_sync_policies(&self) -> impl Iterator<Item = &Doc> {
        self.deleted_sync_policies.values()
    }

    /// Restore a partner; returns the document as the restore response shows it, which keeps
    /// its `deletedDateTime` (the documented sample does). The live copy has it cleared.
    pub(crate) fn restore_partner(&mut self, id: &TenantId) -> Result<Doc, GraphError> {
        if !self.deleted_partners.contains_key(id) {
            return Err(not_found(id));
        }
        if self.partners.contains_key(id) {
            return Err(duplicate_tenant());
        }
        let shown = self.deleted_partners.remove(id).unwrap_or_default();
        let mut live = shown.clone();
        live.insert("deletedDateTime".into(), Value::Null);
        self.partners.insert(id.clone(), live);
        Ok(shown)
    }

    /// Restore a sync policy: its partner must be live and hold no other policy.
    pub(crate) fn restore_sync_policy(&mut self, id: &TenantId) -> Result<Doc, GraphError> {
        if !self.deleted_sync_policies.contains_key(id) || !self.partners.contains_key(id) {
            return Err(not_found(id));
        }
        if self.sync_policies.contains_key(id) {
            return Err(conflicting_sync_policy());
        }
        let shown = self.deleted_sync_policies.remove(id).unwrap_or_default();
        let mut live = shown.clone();
        live.insert("deletedDateTime".into(), Value::Null);
        self.sync_policies.insert(id.clone(), live);
        Ok(shown)
    }

    pub(crate) fn purge_partner(&mut self, id: &TenantId) -> Result<(), GraphError> {
        self.deleted_partners
            .remove(id)
            .map(drop)
            .ok_or_else(|| not_found(id))
    }

    pub(crate) fn purge_sync_policy(&mut self, id: &TenantId) -> Result<(), GraphError> {
        self.deleted_sync_policies
            .remove(id)
            .map(drop)
            .ok_or_else(|| not_found(id))
    }

    pub(crate) fn template(&self) -> &Doc {
        &self.template
    }

    pub(crate) fn update_template(&mut self, patch: Doc) {
        TEMPLATE.merge(&mut self.template, patch);
    }

    pub(crate) fn reset_template(&mut self) {
        self.template = default_template();
    }

    /// Everything, for `GET /_emulator/state`.
    pub(crate) fn dump(&self) -> Value {
        fn by_id(map: &BTreeMap<TenantId, Doc>) -> Value {
            Value::Object(
                map.iter()
                    .map(|(id, doc)| (id.to_string(), Value::Object(doc.clone())))
                    .collect(),
            )
        }
        json!({
            "partners": by_id(&self.partners),
            "identitySynchronization": by_id(&self.sync_policies),
            "deletedPartners": by_id(&self.deleted_partners),
            "deletedSyncPolicies": by_id(&self.deleted_sync_policies),
            "mtoTemplate": Value::Object(self.template.clone()),
            "writes": self.writes,
        })
    }
}

fn new_sync_policy(id: &TenantId, props: Doc) -> Doc {
    let mut doc = SYNC_POLICY.blank();
    doc.insert("tenantId".into(), Value::String(id.to_string()));
    SYNC_POLICY.merge(&mut doc, props);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TenantId {
        TenantId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02x}")).unwrap()
    }

    #[test]
    fn a_partner_with_a_sync_policy_cannot_be_deleted_until_the_policy_is() {
        let mut s = State::default();
        s.create_partner(id(1), Doc::new(), Some(Doc::new()))
            .unwrap();
        assert_eq!(
            s.delete_partner(&id(1)).unwrap_err().code,
            "Request_BadRequest"
        );
        s.delete_sync_policy(&id(1)).unwrap();
        s.delete_partner(&id(1)).unwrap();
        assert!(s.deleted_partner(&id(1)).unwrap()["deletedDateTime"].is_string());
        assert_eq!(
            s.create_partner(id(1), Doc::new(), None)
                .unwrap_err()
                .status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn restoring_a_sync_policy_needs_its_partner_and_a_free_slot() {
        let mut s = State::default();
        s.create_partner(id(1), Doc::new(), None).unwrap();
        s.create_sync_policy(&id(1), Doc::new()).unwrap();
        s.delete_sync_policy(&id(1)).unwrap();
        s.create_sync_policy(&id(1), Doc::new()).unwrap();
        assert_eq!(
            s.restore_sync_policy(&id(1)).unwrap_err().status,
            StatusCode::CONFLICT
        );
        s.delete_sync_policy(&id(1)).unwrap();
        s.delete_partner(&id(1)).unwrap();
        assert_eq!(
            s.restore_sync_policy(&id(1)).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        s.restore_partner(&id(1)).unwrap();
        let shown = s.restore_sync_policy(&id(1)).unwrap();
        assert!(shown["deletedDateTime"].is_string());
        assert!(s.sync_policy(&id(1)).unwrap()["deletedDateTime"].is_null());
    }

    #[test]
    fn patch_before_put_is_directory_object_not_found() {
        let mut s = State::default();
        s.create_partner(id(1), Doc::new(), None).unwrap();
        let err = s.update_sync_policy(&id(1), Doc::new()).unwrap_err();
        assert_eq!(err.code, "Directory_ObjectNotFound");
        assert_eq!(err.status, StatusCode::NOT_FOUND);
    }
}
