//! What a request may ask, and the one error table for what the GraphQL library refuses.
//!
//! Depth is limited for the market's own fields only. Introspection (`__schema`, `__type`)
//! nests deeper by design (the standard query follows `ofType` seven levels down), so it has
//! its own rules: a depth of its own, and at most [`MAX_INTROSPECTION_LISTS`] list fields on
//! any path. The second rule is what keeps introspection cheap: `types { fields { type {
//! fields ... } } }` multiplies the answer by the schema's size at every list, while the
//! standard query has three on its longest path (`types`, `fields`, `args`) and `ofType`
//! chains are single objects. Complexity (the fields selected, weighted by what they cost)
//! is limited over the whole document, introspection included.
//!
//! Every error the library raises itself (syntax, validation, input coercion at execution)
//! leaves here with `extensions.code` and `extensions.status`, like the API's own errors.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Positioned, Response, ServerError, ServerResult, ValidationResult, Variables};
use contract::ErrorCode;

use crate::errors::ApiError;
use crate::Limits;

/// Introspection's own depth limit: the standard query is 13 deep.
pub const MAX_INTROSPECTION_DEPTH: usize = 16;
/// List fields on any one introspection path (see the module's docs).
pub const MAX_INTROSPECTION_LISTS: usize = 3;
/// Selections visited, fragments expanded, before a document counts as abusive: fragments
/// that spread each other (or themselves, which validation refuses later) multiply the
/// walk, and this bounds it before anything else looks at the document.
const MAX_SELECTIONS: usize = 50_000;
/// Fragments spread inside one another on one path: beyond this the walk's recursion (and
/// any real query) is over.
const MAX_SPREAD_NESTING: usize = 32;

/// The introspection fields that return lists of types, fields or values.
const INTROSPECTION_LISTS: &[&str] = &[
    "types",
    "fields",
    "inputFields",
    "interfaces",
    "possibleTypes",
    "enumValues",
    "args",
    "directives",
];

#[derive(Debug)]
pub struct LimitsExtension(pub Limits);

impl ExtensionFactory for LimitsExtension {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Checks(self.0.clone()))
    }
}

struct Checks(Limits);

fn coded(mut error: ServerError, code: ErrorCode) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code.as_str());
    }
    if extensions.get("status").is_none() {
        let status = extensions
            .get("code")
            .and_then(|c| match c {
                async_graphql::Value::String(s) => s.parse::<ErrorCode>().ok(),
                _ => None,
            })
            .unwrap_or(code)
            .status();
        extensions.set("status", status);
    }
    error
}

fn nul_refused() -> ServerError {
    coded(
        ServerError::new("a string argument contains a NUL byte", None),
        ErrorCode::Validation,
    )
}

fn const_has_nul(value: &async_graphql::Value) -> bool {
    match value {
        async_graphql::Value::String(s) => s.contains('\0'),
        async_graphql::Value::List(items) => items.iter().any(const_has_nul),
        async_graphql::Value::Object(fields) => fields
            .iter()
            .any(|(k, v)| k.contains('\0') || const_has_nul(v)),
        _ => false,
    }
}

fn has_nul(value: &async_graphql_value::Value) -> bool {
    use async_graphql_value::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::List(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields.values().any(has_nul),
        _ => false,
    }
}

fn too_complex(message: String) -> ServerError {
    let e = ApiError::new(ErrorCode::QueryTooComplex, message);
    coded(ServerError::new(e.message, None), e.code)
}

#[async_graphql::async_trait::async_trait]
impl Extension for Checks {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        // Anything still without a code came from the library at execution: a value that
        // did not coerce to its input type.
        response.errors = response
            .errors
            .into_iter()
            .map(|e| coded(e, ErrorCode::Validation))
            .collect();
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // A NUL byte is never meant: Postgres refuses it in text, and logs and terminals
        // cut at it. Refused here, once, for every argument of every field.
        if variables.values().any(const_has_nul) {
            return Err(nul_refused());
        }
        let document = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| coded(e, ErrorCode::Validation))?;
        let shape = Shape::of(&document).ok_or_else(|| {
            too_complex(format!(
                "the query expands to more than {MAX_SELECTIONS} selections or nests \
                 fragments more than {MAX_SPREAD_NESTING} deep"
            ))
        })?;
        if shape.nul {
            return Err(nul_refused());
        }
        if shape.depth > self.0.max_depth {
            return Err(too_complex(format!(
                "the query is nested {} deep, more than {}",
                shape.depth, self.0.max_depth
            )));
        }
        if shape.introspection_depth > MAX_INTROSPECTION_DEPTH
            || shape.introspection_lists > MAX_INTROSPECTION_LISTS
        {
            return Err(too_complex(format!(
                "introspection nests {} deep with {} lists on one path, more than \
                 {MAX_INTROSPECTION_DEPTH} and {MAX_INTROSPECTION_LISTS}",
                shape.introspection_depth, shape.introspection_lists
            )));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| coded(e, ErrorCode::Validation))
                .collect::<Vec<_>>()
        })?;
        if result.complexity > self.0.max_complexity {
            return Err(vec![too_complex(format!(
                "the query's complexity is {}, more than {}",
                result.complexity, self.0.max_complexity
            ))]);
        }
        Ok(result)
    }
}

/// How deep a document nests, counted apart for the market's fields and for introspection.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    depth: usize,
    introspection_depth: usize,
    introspection_lists: usize,
    selections: usize,
    /// Some argument holds a NUL byte.
    nul: bool,
}

impl Shape {
    /// `None` when the document expands beyond [`MAX_SELECTIONS`] or nests fragments
    /// beyond [`MAX_SPREAD_NESTING`].
    fn of(document: &ExecutableDocument) -> Option<Shape> {
        let mut shape = Shape::default();
        for (_, operation) in document.operations.iter() {
            shape.walk(document, &operation.node.selection_set, Walk::default())?;
        }
        Some(shape)
    }

    fn walk(
        &mut self,
        document: &ExecutableDocument,
        set: &Positioned<SelectionSet>,
        at: Walk,
    ) -> Option<()> {
        for selection in &set.node.items {
            self.selections += 1;
            if self.selections > MAX_SELECTIONS {
                return None;
            }
            match &selection.node {
                Selection::Field(field) => {
                    self.nul |= field.node.arguments.iter().any(|(_, v)| has_nul(&v.node));
                    let name = field.node.name.node.as_str();
                    let mut next = at;
                    if at.introspection || name == "__schema" || name == "__type" {
                        next.introspection = true;
                        next.introspection_depth += 1;
                        next.lists += usize::from(INTROSPECTION_LISTS.contains(&name));
                        self.introspection_depth =
                            self.introspection_depth.max(next.introspection_depth);
                        self.introspection_lists = self.introspection_lists.max(next.lists);
                    } else {
                        next.depth += 1;
                        self.depth = self.depth.max(next.depth);
                    }
                    self.walk(document, &field.node.selection_set, next)?;
                }
                Selection::InlineFragment(fragment) => {
                    self.walk(document, &fragment.node.selection_set, at)?;
                }
                Selection::FragmentSpread(spread) => {
                    if at.spreads >= MAX_SPREAD_NESTING {
                        return None;
                    }
                    // An unknown fragment is validation's to report.
                    if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node)
                    {
                        let next = Walk {
                            spreads: at.spreads + 1,
                            ..at
                        };
                        self.walk(document, &fragment.node.selection_set, next)?;
                    }
                }
            }
        }
        Some(())
    }
}

/// Where the walk is on one path.
#[derive(Debug, Default, Clone, Copy)]
struct Walk {
    depth: usize,
    introspection: bool,
    introspection_depth: usize,
    lists: usize,
    spreads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str) -> Option<Shape> {
        Shape::of(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn introspection_counts_apart_from_the_market_s_fields() {
        let s = shape("{ a { b { c } } __schema { types { name fields { name } } } }").unwrap();
        assert_eq!(s.depth, 3);
        assert_eq!(s.introspection_depth, 4);
        assert_eq!(s.introspection_lists, 2);
    }

    #[test]
    fn nested_type_lists_are_counted_through_fragments() {
        let s = shape(
            "query { __schema { types { ...T } } } \
             fragment T on __Type { fields { type { fields { type { fields { name } } } } } }",
        )
        .unwrap();
        assert_eq!(s.introspection_lists, 4, "types + three fields");
        assert_eq!(s.depth, 0);
    }

    #[test]
    fn fragments_that_multiply_are_cut_off() {
        let mut query = String::from("{ a { ...F0 } }");
        for i in 0..24 {
            query.push_str(&format!(
                " fragment F{i} on A {{ x: b {{ ...F{} }} y: b {{ ...F{} }} }}",
                i + 1,
                i + 1
            ));
        }
        query.push_str(" fragment F24 on A { c }");
        assert_eq!(shape(&query), None, "2^24 paths");
    }

    #[test]
    fn a_fragment_cycle_ends_the_walk() {
        assert_eq!(
            shape("{ a { ...F } } fragment F on A { b { ...F } }"),
            None,
            "refused before validation could loop on it"
        );
    }
}
