//! Command's list query parameters (`QueryString`, `PageReturned`, `ReturnLimit`, `SortField`,
//! `SortAscending`) shared by `/MetadataFields` and `/EnrollmentPatterns`.

use std::cmp::Ordering;

use actix_web::web;

use crate::errors::{codes, ApiError};

/// Default page size.
pub const DEFAULT_RETURN_LIMIT: usize = 50;

/// A field value of a listed item, for filtering and sorting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// Integer field (ids, display order).
    Int(i64),
    /// Text field, compared case-insensitively.
    Str(String),
}

impl FieldValue {
    fn cmp_key(&self, other: &FieldValue) -> Ordering {
        match (self, other) {
            (FieldValue::Int(a), FieldValue::Int(b)) => a.cmp(b),
            (FieldValue::Str(a), FieldValue::Str(b)) => {
                a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())
            }
            (FieldValue::Int(_), FieldValue::Str(_)) => Ordering::Less,
            (FieldValue::Str(_), FieldValue::Int(_)) => Ordering::Greater,
        }
    }
}

/// An item that can be filtered and sorted by named fields.
pub trait Listable {
    /// Value of `field` (canonical name as in the allow-lists), `None` when not present.
    fn field(&self, field: &str) -> Option<FieldValue>;
}

/// `QueryString` comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `-eq`
    Eq,
    /// `-ne`
    Ne,
    /// `-contains`
    Contains,
    /// `-startswith`
    StartsWith,
    /// `-endswith`
    EndsWith,
}

/// A parsed `QueryString` such as `Name -eq "Issuer-Name"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Canonical field name.
    pub field: String,
    /// Operator.
    pub op: Op,
    /// Comparison value, quotes removed.
    pub value: String,
}

impl Filter {
    fn matches(&self, actual: Option<FieldValue>) -> bool {
        let Some(actual) = actual else {
            return self.op == Op::Ne;
        };
        let (a, v) = match &actual {
            FieldValue::Int(i) => (i.to_string(), self.value.trim().to_string()),
            FieldValue::Str(s) => (s.to_ascii_lowercase(), self.value.to_ascii_lowercase()),
        };
        match self.op {
            Op::Eq => a == v,
            Op::Ne => a != v,
            Op::Contains => a.contains(&v),
            Op::StartsWith => a.starts_with(&v),
            Op::EndsWith => a.ends_with(&v),
        }
    }
}

/// All list parameters of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Filter, if `QueryString` was given.
    pub filter: Option<Filter>,
    /// 1-based page.
    pub page: usize,
    /// Page size.
    pub limit: usize,
    /// Canonical sort field.
    pub sort_field: String,
    /// `SortAscending=1` (Command's naming: 0 ascending, 1 descending).
    pub descending: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(codes::QUERY_INVALID, message)
}

fn canonical(name: &str, allowed: &[&str]) -> Option<String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(name))
        .map(|a| a.to_string())
}

/// Parses a `QueryString` expression (one comparison; compound queries are refused).
pub fn parse_filter(text: &str, queryable: &[&str]) -> Result<Option<Filter>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (field, rest) = text
        .split_once(char::is_whitespace)
        .ok_or_else(|| invalid(format!("The query '{text}' is not valid.")))?;
    let rest = rest.trim_start();
    let (op, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| invalid(format!("The query '{text}' is not valid.")))?;
    let field = canonical(field, queryable)
        .ok_or_else(|| invalid(format!("The field '{field}' cannot be queried.")))?;
    let op = match op.to_ascii_lowercase().as_str() {
        "-eq" => Op::Eq,
        "-ne" => Op::Ne,
        "-contains" => Op::Contains,
        "-startswith" => Op::StartsWith,
        "-endswith" => Op::EndsWith,
        other => return Err(invalid(format!("The operator '{other}' is not supported."))),
    };
    let value = value.trim();
    let value = if let Some(inner) = value.strip_prefix('"') {
        let (inner, after) = inner
            .split_once('"')
            .ok_or_else(|| invalid(format!("The query '{text}' has an unterminated string.")))?;
        if !after.trim().is_empty() {
            return Err(invalid(format!(
                "The query '{text}' is not supported by the simulator (one comparison only)."
            )));
        }
        inner.to_string()
    } else if value.contains(char::is_whitespace) {
        return Err(invalid(format!(
            "The query '{text}' is not supported by the simulator (one comparison only)."
        )));
    } else {
        value.to_string()
    };
    Ok(Some(Filter { field, op, value }))
}

fn parse_positive(name: &str, value: &str, default: usize) -> Result<usize, ApiError> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("The value '{value}' is not valid for {name}.")))?;
    Ok(if n < 1 { default } else { n as usize })
}

/// Parses the raw (URL-encoded) query string; `+` and `%20` both decode to a space.
pub fn parse(
    raw: &str,
    queryable: &[&str],
    sortable: &[&str],
    default_sort: &str,
) -> Result<ListQuery, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(raw)
        .map_err(|e| invalid(format!("The query string could not be parsed: {e}")))?
        .into_inner();
    let mut q = ListQuery {
        filter: None,
        page: 1,
        limit: DEFAULT_RETURN_LIMIT,
        sort_field: default_sort.to_string(),
        descending: false,
    };
    for (key, value) in pairs {
        match key.to_ascii_lowercase().as_str() {
            "querystring" => q.filter = parse_filter(&value, queryable)?,
            "pagereturned" => q.page = parse_positive("PageReturned", &value, 1)?,
            "returnlimit" => q.limit = parse_positive("ReturnLimit", &value, DEFAULT_RETURN_LIMIT)?,
            "sortfield" if !value.trim().is_empty() => {
                q.sort_field = canonical(value.trim(), sortable).ok_or_else(|| {
                    invalid(format!("The field '{value}' cannot be used for sorting."))
                })?;
            }
            "sortascending" => {
                q.descending = match value.trim() {
                    "0" | "" => false,
                    "1" => true,
                    other => {
                        return Err(invalid(format!(
                            "The value '{other}' is not valid for SortAscending (0 or 1)."
                        )))
                    }
                }
            }
            // Unknown parameters are ignored, as ASP.NET model binding does.
            _ => {}
        }
    }
    Ok(q)
}

/// Filters, sorts (stable, ties by input order) and pages `items`.
pub fn apply<T: Listable>(items: Vec<T>, q: &ListQuery) -> Vec<T> {
    let mut items: Vec<T> = match &q.filter {
        Some(f) => items
            .into_iter()
            .filter(|i| f.matches(i.field(&f.field)))
            .collect(),
        None => items,
    };
    items.sort_by(|a, b| {
        let ord = match (a.field(&q.sort_field), b.field(&q.sort_field)) {
            (Some(x), Some(y)) => x.cmp_key(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if q.descending {
            ord.reverse()
        } else {
            ord
        }
    });
    let skip = (q.page - 1).saturating_mul(q.limit);
    items.into_iter().skip(skip).take(q.limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_and_percent_twenty_decode_alike() {
        let a = parse(
            "QueryString=Name+-eq+%22Default+Pattern%22",
            &["Name"],
            &["Id"],
            "Id",
        )
        .expect("plus form");
        let b = parse(
            "QueryString=Name%20-eq%20%22Default%20Pattern%22",
            &["Name"],
            &["Id"],
            "Id",
        )
        .expect("percent form");
        assert_eq!(a, b);
        assert_eq!(
            a.filter,
            Some(Filter {
                field: "Name".into(),
                op: Op::Eq,
                value: "Default Pattern".into()
            })
        );
    }

    #[test]
    fn bad_queries_are_rejected() {
        assert!(parse_filter("Name -eq", &["Name"]).is_err());
        assert!(parse_filter("Id -eq 1", &["Name"]).is_err());
        assert!(parse_filter("Name -like \"x\"", &["Name"]).is_err());
        assert!(parse_filter("Name -eq \"a\" AND Name -eq \"b\"", &["Name"]).is_err());
        assert!(parse("PageReturned=x", &["Name"], &["Id"], "Id").is_err());
        assert!(parse("SortField=Bogus", &["Name"], &["Id"], "Id").is_err());
    }
}
