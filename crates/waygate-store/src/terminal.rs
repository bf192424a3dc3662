//! Terminal allocations and node-agent presence.

use crate::{INSTANCE_STALE_MS, Result, Store, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AllocationRow {
    pub id: String,
    #[sqlx(rename = "userId")]
    pub user_id: String,
    #[sqlx(rename = "nodeId")]
    pub node_id: String,
    #[sqlx(rename = "tenantId")]
    pub tenant_id: String,
    #[sqlx(rename = "projectId")]
    pub project_id: String,
    pub command: Option<String>,
    #[sqlx(rename = "createdAt")]
    pub created_at: i64,
}

pub struct NewAllocation<'a> {
    pub user_id: &'a str,
    pub node_id: &'a str,
    pub tenant_id: &'a str,
    pub project_id: &'a str,
    pub command: Option<&'a str>,
}

const COLUMNS: &str = r#""id", "userId", "nodeId", "tenantId", "projectId", "command", "createdAt""#;

impl Store {
    pub async fn create_allocation(&self, new: NewAllocation<'_>, now: i64) -> Result<AllocationRow> {
        let row = AllocationRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: new.user_id.to_owned(),
            node_id: new.node_id.to_owned(),
            tenant_id: new.tenant_id.to_owned(),
            project_id: new.project_id.to_owned(),
            command: new.command.map(str::to_owned),
            created_at: now,
        };
        on_pool!(self, |pool| {
            sqlx::query(
            r#"INSERT INTO "TerminalAllocation" ("id", "userId", "nodeId", "tenantId", "projectId", "command", "createdAt")
               VALUES ($1, $2, $3, $4, $5, $6, $7)"#
        )
        .bind(&row.id)
        .bind(&row.user_id)
        .bind(&row.node_id)
        .bind(&row.tenant_id)
        .bind(&row.project_id)
        .bind(&row.command)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(row)
    }

    pub async fn list_allocations(&self, user_id: &str) -> Result<Vec<AllocationRow>> {
        let sql =
            format!(r#"SELECT {COLUMNS} FROM "TerminalAllocation" WHERE "userId" = $1 ORDER BY "createdAt", "id""#);
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, AllocationRow>(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// An allocation by id whoever owns it; callers compare `user_id` (others get 404).
    pub async fn get_allocation(&self, id: &str) -> Result<Option<AllocationRow>> {
        let sql = format!(r#"SELECT {COLUMNS} FROM "TerminalAllocation" WHERE "id" = $1"#);
        let row = on_pool!(self, |pool| sqlx::query_as::<_, AllocationRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    pub async fn delete_allocation(&self, user_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |pool| sqlx::query(
            r#"DELETE FROM "TerminalAllocation" WHERE "userId" = $1 AND "id" = $2"#
        )
        .bind(user_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Records that `instance` holds the node's agent socket (a newer connection wins).
    pub async fn mark_agent_connected(&self, node_id: &str, instance: &str, now: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            r#"INSERT INTO "TerminalAgent" ("nodeId", "instanceId", "connectedAt") VALUES ($1, $2, $3)
               ON CONFLICT ("nodeId") DO UPDATE SET "instanceId" = $2, "connectedAt" = $3"#
        )
        .bind(node_id)
        .bind(instance)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Forgets the agent unless another instance took it over meanwhile.
    pub async fn mark_agent_disconnected(&self, node_id: &str, instance: &str) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(r#"DELETE FROM "TerminalAgent" WHERE "nodeId" = $1 AND "instanceId" = $2"#)
            .bind(node_id)
            .bind(instance)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The instance holding the node's agent, if that instance is alive.
    pub async fn agent_instance(&self, node_id: &str, now: i64) -> Result<Option<String>> {
        let row: Option<(String,)> = on_pool!(self, |pool| sqlx::query_as(
            r#"SELECT a."instanceId" FROM "TerminalAgent" a
               JOIN "GatewayInstance" i ON i."id" = a."instanceId"
               WHERE a."nodeId" = $1 AND i."heartbeatAt" > $2"#
        )
        .bind(node_id)
        .bind(now - INSTANCE_STALE_MS)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|r| r.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allocations_and_agent_presence() {
        for (store, _guard) in crate::testing::backends().await {
            let a = store
                .create_allocation(
                    NewAllocation { user_id: "u1", node_id: "n1", tenant_id: "t", project_id: "p", command: None },
                    1,
                )
                .await
                .unwrap();
            assert_eq!(store.get_allocation(&a.id).await.unwrap().unwrap().node_id, "n1");
            assert_eq!(store.list_allocations("u1").await.unwrap().len(), 1);
            assert!(store.list_allocations("u2").await.unwrap().is_empty());
            assert!(!store.delete_allocation("u2", &a.id).await.unwrap());

            let now = 1_000_000;
            store.heartbeat_instance("i1", now, false).await.unwrap();
            assert_eq!(store.agent_instance("n1", now).await.unwrap(), None);
            store.mark_agent_connected("n1", "i1", now).await.unwrap();
            assert_eq!(store.agent_instance("n1", now).await.unwrap().as_deref(), Some("i1"));
            assert_eq!(store.agent_instance("n1", now + INSTANCE_STALE_MS + 1).await.unwrap(), None);
            store.mark_agent_disconnected("n1", "other").await.unwrap();
            assert!(store.agent_instance("n1", now).await.unwrap().is_some());
            store.mark_agent_disconnected("n1", "i1").await.unwrap();
            assert_eq!(store.agent_instance("n1", now).await.unwrap(), None);
            assert!(store.delete_allocation("u1", &a.id).await.unwrap());
        }
    }
}
