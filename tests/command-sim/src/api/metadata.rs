//! `GET /MetadataFields` (command-api.md §5.2): metadata field definitions, paged and sorted by
//! `DisplayOrder` by default.

use serde::Serialize;

use super::query::{self, FieldValue, Listable};
use super::{ok, Answer};
use crate::config::MetadataField;
use crate::state::AppState;

impl Listable for &MetadataField {
    fn field(&self, field: &str) -> Option<FieldValue> {
        match field {
            "Id" => Some(FieldValue::Int(self.id)),
            "Name" => Some(FieldValue::Str(self.name.clone())),
            "DisplayOrder" => Some(FieldValue::Int(self.display_order)),
            "DataType" => Some(FieldValue::Int(self.data_type)),
            "Description" => Some(FieldValue::Str(self.description.clone())),
            _ => None,
        }
    }
}

/// The JSON object Command returns for one field definition.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetadataFieldJson<'a> {
    id: i64,
    name: &'a str,
    description: &'a str,
    data_type: i64,
    hint: &'a str,
    validation: Option<String>,
    enrollment: i64,
    message: Option<String>,
    options: Option<String>,
    default_value: Option<String>,
    display_order: i64,
    case_sensitive: bool,
    exempt_from_actioned_count: bool,
}

impl<'a> From<&'a MetadataField> for MetadataFieldJson<'a> {
    fn from(f: &'a MetadataField) -> Self {
        MetadataFieldJson {
            id: f.id,
            name: &f.name,
            description: &f.description,
            data_type: f.data_type,
            hint: "",
            validation: None,
            enrollment: 0,
            message: None,
            options: None,
            default_value: None,
            display_order: f.display_order,
            case_sensitive: false,
            exempt_from_actioned_count: false,
        }
    }
}

/// Lists field definitions honouring `QueryString`, paging and sort parameters.
pub fn list(state: &AppState, raw_query: &str) -> Answer {
    let q = query::parse(
        raw_query,
        &["Name"],
        &["DisplayOrder", "Id", "Name", "DataType", "Description"],
        "DisplayOrder",
    )?;
    let items: Vec<&MetadataField> = state.config.metadata_fields.iter().collect();
    let page: Vec<MetadataFieldJson<'_>> = query::apply(items, &q)
        .into_iter()
        .map(MetadataFieldJson::from)
        .collect();
    ok(&page)
}
