//! The governed operations, by the names the audit log stores, and the body each one takes.

use std::fmt;

/// What kind of governed operation a request is. The [`as_str`](Self::as_str) names are stored
/// in the audit log (`operation`), so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `PUT …/partners/{k}/identitySynchronization` (Graph's "create", §2.2 S2).
    SyncCreate,
    /// `PATCH …/partners/{k}/identitySynchronization` (§2.2 S3).
    SyncUpdate,
    /// `DELETE …/partners/{k}/identitySynchronization` (§2.2 S4; a soft delete in beta).
    SyncDelete,
    /// `POST …/partners` (§2.3 P2); the partner is in the body.
    PartnerCreate,
    /// `PATCH …/partners/{k}` (§2.3 P4).
    PartnerUpdate,
    /// `DELETE …/partners/{k}` (§2.3 P5).
    PartnerDelete,
    /// beta `POST …/deletedItems/crossTenantPartners/{k}/restore` (§2.4 D5).
    PartnerRestore,
    /// beta `POST …/deletedItems/crossTenantSyncPolicyPartners/{k}/restore` (D6) and
    /// `POST …/deletedItems/crossTenantPartners/{k}/identitySynchronization/restore` (D9).
    SyncRestore,
    /// beta `DELETE …/deletedItems/crossTenantPartners/{k}` (D7, permanent).
    DeletedPartnerPurge,
    /// beta `DELETE …/deletedItems/crossTenantSyncPolicyPartners/{k}` (D8, permanent).
    DeletedSyncPurge,
    /// beta `PUT|PATCH|DELETE …/deletedItems/crossTenantPartners/{k}/identitySynchronization`
    /// (D9: SDK-generated, undocumented).
    DeletedPartnerSyncWrite,
    /// `PATCH …/templates/multiTenantOrganizationIdentitySynchronization` (§2.5).
    TemplateUpdate,
    /// `POST …/multiTenantOrganizationIdentitySynchronization/resetToDefaultSettings` (§2.5).
    TemplateReset,
    /// Any write under `/policies/crossTenantIdentitySyncPolicy` (§2.6): always refused.
    LegacySyncPolicyWrite,
    /// A read that returns sync policy content (forwarded; recorded when reads are audited).
    SyncRead,
}

impl OperationKind {
    /// Every kind, for exhaustive tests and for parsing stored names.
    pub(crate) const ALL: [OperationKind; 15] = [
        OperationKind::SyncCreate,
        OperationKind::SyncUpdate,
        OperationKind::SyncDelete,
        OperationKind::PartnerCreate,
        OperationKind::PartnerUpdate,
        OperationKind::PartnerDelete,
        OperationKind::PartnerRestore,
        OperationKind::SyncRestore,
        OperationKind::DeletedPartnerPurge,
        OperationKind::DeletedSyncPurge,
        OperationKind::DeletedPartnerSyncWrite,
        OperationKind::TemplateUpdate,
        OperationKind::TemplateReset,
        OperationKind::LegacySyncPolicyWrite,
        OperationKind::SyncRead,
    ];

    /// The stable snake_case name stored in the audit log's `operation` column.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OperationKind::SyncCreate => "sync_create",
            OperationKind::SyncUpdate => "sync_update",
            OperationKind::SyncDelete => "sync_delete",
            OperationKind::PartnerCreate => "partner_create",
            OperationKind::PartnerUpdate => "partner_update",
            OperationKind::PartnerDelete => "partner_delete",
            OperationKind::PartnerRestore => "partner_restore",
            OperationKind::SyncRestore => "sync_restore",
            OperationKind::DeletedPartnerPurge => "deleted_partner_purge",
            OperationKind::DeletedSyncPurge => "deleted_sync_purge",
            OperationKind::DeletedPartnerSyncWrite => "deleted_partner_sync_write",
            OperationKind::TemplateUpdate => "template_update",
            OperationKind::TemplateReset => "template_reset",
            OperationKind::LegacySyncPolicyWrite => "legacy_sync_policy_write",
            OperationKind::SyncRead => "sync_read",
        }
    }

    /// The kind stored under `name`, if any.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the kind is about the MTO template rather than one partner.
    pub(crate) fn is_template(self) -> bool {
        matches!(
            self,
            OperationKind::TemplateUpdate | OperationKind::TemplateReset
        )
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What body a governed request may carry, checked by the classifier's `parse_body` / `check_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyRule {
    /// No body, or JSON whitespace only (DELETE, restore, reset).
    Empty,
    /// A `crossTenantIdentitySyncPolicyPartner` object (§4.1, beta §4.2).
    Sync,
    /// A `crossTenantAccessPolicyConfigurationPartner` object (§4.3).
    Partner,
    /// A `multiTenantOrganizationIdentitySyncPolicyTemplate` object (§2.5).
    Template,
}
