//! `GET /api/v1/reads?after=&limit=` (admin): who read the log through the API, oldest first,
//! from the `admin_reads` table. Reading it is itself recorded, like every log route.

use serde_json::{Value, json};

use super::events::digits;
use super::operations::{bad, limit, pairs, unavailable};
use super::record::{Answer, Served};
use crate::store::Store;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Answer `GET /api/v1/reads?query`.
pub(crate) async fn list(store: &Store, query: Option<&str>) -> Answer {
    let (mut after, mut page) = (0_i64, DEFAULT_LIMIT);
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "after" => {
                after = digits(&value).ok_or_else(|| bad(&key, "is not a read id (0 or more)"))?;
            }
            "limit" => page = limit(&key, &value, MAX_LIMIT)?,
            _ => return Err(bad(&key, "is not a parameter of this route").into()),
        }
    }
    let reads = store
        .read_side()
        .admin_reads(after, page)
        .await
        .map_err(|e| unavailable(&e))?;
    let rows = reads.len() as u64;
    let mut body = json!({ "value": reads });
    if reads.len() == page as usize {
        if let Some(last) = reads.last() {
            body["@odata.nextLink"] =
                Value::String(format!("/api/v1/reads?after={}&limit={page}", last.id));
        }
    }
    Ok(Served { body, rows })
}
