//! Terminal gateway (SPEC 4.2): allocations and single-use tokens over HTTP, node agents on
//! `/api/agent/ws`, browser sessions on `/ws/terminal/{allocation_id}` relayed to the agent
//! with end-to-end flow control, and the `/terminal/{allocation_id}` page.

pub mod agent;
pub mod api;
pub mod page;
pub mod session;
pub mod tokens;

use std::sync::Arc;

use dashmap::DashMap;
use waygate_config::Config;

pub use agent::AgentLink;

/// Terminal state of one instance.
pub struct Terminal {
    /// Agents whose socket this instance holds, by node id.
    pub agents: DashMap<String, Arc<AgentLink>>,
    pub tokens: Box<dyn tokens::TokenStore>,
}

impl Terminal {
    pub fn new(bus: &waygate_bus::Bus) -> Terminal {
        let tokens: Box<dyn tokens::TokenStore> = match bus.redis_connection() {
            Some(con) => Box::new(tokens::RedisTokens::new(con, bus.key("terminal"))),
            None => Box::new(tokens::LocalTokens::default()),
        };
        Terminal { agents: DashMap::new(), tokens }
    }
}

/// `WAYGATE_RESOURCE_NAME_TEMPLATE` filled in; the seed's
/// `core42:aicloud:{region}:{tenant_id}:{project_id}:gpuaas/allocation:{allocation_id}` works too.
pub fn resource_name(config: &Config, tenant: &str, project: &str, allocation: &str) -> String {
    config
        .resource_name_template
        .replace("{region}", &config.region)
        .replace("{tenant_id}", tenant)
        .replace("{project_id}", project)
        .replace("{allocation_id}", allocation)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seed_resource_name_is_expressible() {
        let mut flags = std::collections::BTreeMap::new();
        flags.insert(
            "WAYGATE_RESOURCE_NAME_TEMPLATE".to_owned(),
            "core42:aicloud:{region}:{tenant_id}:{project_id}:gpuaas/allocation:{allocation_id}".to_owned(),
        );
        flags.insert("WAYGATE_REGION".to_owned(), "uae-1".to_owned());
        let config =
            waygate_config::Config::load(waygate_config::Layers { flags, env: Default::default(), file: None })
                .expect("valid config");
        assert_eq!(super::resource_name(&config, "t1", "p1", "a1"), "core42:aicloud:uae-1:t1:p1:gpuaas/allocation:a1");
    }
}
