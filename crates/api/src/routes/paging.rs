//! Paging, for every listing: the `page` and `page_size` query parameters, their rule, and how the API
//! description states it. `MAX_PAGE_SIZE` is configured, while a schema attribute must be a literal, so the
//! description's `page_size` bounds are written when the document is built (`describe_page_size`).

use pricing_core::config::Limits;
use serde::Deserialize;
use utoipa::{
    openapi::{schema::Schema, OpenApi, RefOr},
    IntoParams,
};

use crate::ApiError;

/// The listing's page: extracted beside the listing's own filters (`Query<PageParams>`) and described
/// with them (`params(PageParams, ...)`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageParams {
    /// From 1.
    #[param(minimum = 1, maximum = 1_000)]
    page: Option<i64>,
    // Its maximum and its description (the configured `MAX_PAGE_SIZE`) are written by `describe_page_size`.
    #[param(minimum = 1)]
    page_size: Option<i64>,
}

impl PageParams {
    /// `(page, page_size)`: `page` from 1 to `MAX_PAGE`, `page_size` from 1 to `MAX_PAGE_SIZE` (20, or
    /// `MAX_PAGE_SIZE` if lower, when absent), and no deeper than `MAX_OFFSET` rows.
    pub(super) fn checked(&self, limits: &Limits) -> Result<(i64, i64), ApiError> {
        let page = self.page.unwrap_or(1);
        let max = limits.max_page_size;
        let page_size = self.page_size.unwrap_or(default_page_size(max));
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::Validation(format!("page must be between 1 and {MAX_PAGE}")));
        }
        if !(1..=max).contains(&page_size) {
            return Err(ApiError::Validation(format!(
                "page_size must be between 1 and {max} (MAX_PAGE_SIZE)"
            )));
        }
        if (page - 1) * page_size > MAX_OFFSET {
            return Err(ApiError::Validation(format!(
                "page * page_size may skip at most {MAX_OFFSET} rows: narrow the list (status, search) instead"
            )));
        }
        Ok((page, page_size))
    }
}

const DEFAULT_PAGE_SIZE: i64 = 20;
/// With `page_size` at most 100 (the default `MAX_PAGE_SIZE`), page 1,000 skips under `MAX_OFFSET` rows.
const MAX_PAGE: i64 = 1_000;
/// Deeper pages are refused rather than scanned: offset pagination reads every row before the page.
const MAX_OFFSET: i64 = 100_000;

fn default_page_size(max_page_size: i64) -> i64 {
    DEFAULT_PAGE_SIZE.min(max_page_size)
}

/// States the configured `MAX_PAGE_SIZE` on every `page_size` query parameter of the description: its
/// `maximum`, and its description.
pub(super) fn describe_page_size(api: &mut OpenApi, limits: &Limits) {
    let max = limits.max_page_size;
    let description = format!("1 to MAX_PAGE_SIZE ({max}); {} when absent.", default_page_size(max));
    let operations = api.paths.paths.values_mut().flat_map(|item| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
            .into_iter()
            .flatten()
    });
    let parameters = operations.flat_map(|op| op.parameters.iter_mut().flatten());
    for parameter in parameters {
        let RefOr::T(parameter) = parameter else { continue };
        if parameter.name != "page_size" {
            continue;
        }
        parameter.description = Some(description.clone());
        if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
            schema.maximum = Some(utoipa::Number::Int(max as isize));
        }
    }
}
