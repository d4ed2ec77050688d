//! Pagination of listings.

use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `limit` and `offset` of a listing, as given in the query string.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageRequest {
    /// Rows per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

impl PageRequest {
    pub fn checked(self) -> crate::Result<(i64, i64)> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = self.offset.unwrap_or(0);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(crate::Error::invalid(
                "limit",
                format!("doit être compris entre 1 et {MAX_LIMIT}"),
            ));
        }
        if offset < 0 {
            return Err(crate::Error::invalid("offset", "ne peut pas être négatif"));
        }
        Ok((limit, offset))
    }
}

/// One page of a listing, with the total count of matching rows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}
