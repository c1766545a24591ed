//! The handlers, one file per resource; each names its path, role and
//! responses for the OpenAPI document.

mod access;
mod observe;
mod plans;
mod plugins;
mod runs;
mod sites;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;

/// Calls of one stage in flight the dry-run forecast assumes (the
/// executor's default).
const FORECAST_PARALLELISM: usize = 64;

pub fn all(router: OpenApiRouter<ApiState>) -> OpenApiRouter<ApiState> {
    router
        .routes(routes!(access::login))
        .routes(routes!(access::whoami))
        .routes(routes!(access::renew))
        .routes(routes!(access::providers))
        .routes(routes!(access::sign_in_with_code))
        .routes(routes!(access::sign_in_with_device_code))
        .routes(routes!(access::refresh_sign_in))
        .routes(routes!(access::list_tokens, access::create_token))
        .routes(routes!(access::revoke_token))
        .routes(routes!(access::list_users))
        .routes(routes!(access::put_user, access::delete_user))
        .routes(routes!(access::change_password))
        .routes(routes!(plans::list_plans))
        .routes(routes!(
            plans::get_plan,
            plans::put_plan,
            plans::delete_plan
        ))
        .routes(routes!(plans::dry_run))
        .routes(routes!(plans::recovery_points))
        .routes(routes!(plans::runbook))
        .routes(routes!(runs::trigger))
        .routes(routes!(runs::fail_over_site))
        .routes(routes!(runs::preview_site_failover))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::approve))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::events))
        .routes(routes!(observe::compliance))
        .routes(routes!(observe::events))
        .routes(routes!(observe::audit))
        .routes(routes!(plugins::list_plugins, plugins::publish))
        .routes(routes!(plugins::release))
        .routes(routes!(plugins::versions))
        .routes(routes!(plugins::activate))
        .routes(routes!(plugins::disable))
        .routes(routes!(plugins::enable))
        .routes(routes!(sites::list_sites))
        .routes(routes!(
            sites::get_site,
            sites::put_site,
            sites::delete_site
        ))
        .routes(routes!(sites::site_health))
        .routes(routes!(sites::site_workloads))
}
