//! Placeholder: filled in by its owner.

use utoipa_axum::router::OpenApiRouter;

/// The routes of this part.
pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new()
}
