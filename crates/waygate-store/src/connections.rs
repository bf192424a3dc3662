//! Connection records for at-least-once `$disconnect` delivery.

use crate::{Result, Store, on_pool};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
pub struct ClosedConnection {
    pub id: String,
    pub user_id: Option<String>,
    pub connected_at: i64,
    pub closed_at: i64,
    pub close_code: i64,
    pub attempts: i64,
}

impl Store {
    pub async fn record_connection(&self, id: &str, instance: &str, user_id: Option<&str>, now: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            r#"INSERT INTO "GatewayConnection" ("id", "instanceId", "userId", "connectedAt") VALUES ($1, $2, $3, $4)"#
        )
        .bind(id)
        .bind(instance)
        .bind(user_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Marks a connection closed (its `$disconnect` still to be delivered).
    pub async fn close_connection(&self, id: &str, code: i64, now: i64) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
            r#"UPDATE "GatewayConnection" SET "closedAt" = COALESCE("closedAt", $1), "closeCode" = COALESCE("closeCode", $2),
                   "attempts" = "attempts" + 1
               WHERE "id" = $3"#
        )
        .bind(now)
        .bind(code)
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// The `$disconnect` was delivered: forget the connection.
    pub async fn forget_connection(&self, id: &str) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(r#"DELETE FROM "GatewayConnection" WHERE "id" = $1"#)
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Closed connections of `instance` whose `$disconnect` is still owed, oldest first.
    pub async fn owed_disconnects(&self, instance: &str, limit: i64) -> Result<Vec<ClosedConnection>> {
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, ClosedConnection>(
            r#"SELECT "id", "userId", "connectedAt", "closedAt", "closeCode", "attempts" FROM "GatewayConnection"
               WHERE "instanceId" = $1 AND "closedAt" IS NOT NULL ORDER BY "closedAt" LIMIT $2"#
        )
        .bind(instance)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Takes over the connections of instances that are gone (no heartbeat row): they are
    /// closed now as far as anyone can tell (1006), and `instance` owes their `$disconnect`.
    pub async fn adopt_orphan_connections(&self, instance: &str, now: i64) -> Result<u64> {
        let n = on_pool!(self, |pool| sqlx::query(
            r#"UPDATE "GatewayConnection"
               SET "instanceId" = $1, "closedAt" = COALESCE("closedAt", $2), "closeCode" = COALESCE("closeCode", 1006)
               WHERE "instanceId" <> $1
                 AND NOT EXISTS (SELECT 1 FROM "GatewayInstance" i WHERE i."id" = "GatewayConnection"."instanceId")"#
        )
        .bind(instance)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::backends;

    #[tokio::test]
    async fn connections_of_dead_instances_are_adopted_once() {
        for (store, _guard) in backends().await {
            store.heartbeat_instance("live", 1_000, false).await.unwrap();
            store.heartbeat_instance("dead", 1_000, false).await.unwrap();
            store.record_connection("c1", "dead", Some("u"), 100).await.unwrap();
            store.record_connection("c2", "live", None, 100).await.unwrap();
            assert_eq!(store.adopt_orphan_connections("live", 2_000).await.unwrap(), 0, "dead still has its row");
            store.heartbeat_instance("live", 100_000, false).await.unwrap();
            store.reap_dead_instances(100_000).await.unwrap();
            assert_eq!(store.adopt_orphan_connections("live", 100_001).await.unwrap(), 1);
            let owed = store.owed_disconnects("live", 10).await.unwrap();
            assert_eq!(owed.len(), 1);
            assert_eq!((owed[0].id.as_str(), owed[0].close_code, owed[0].user_id.as_deref()), ("c1", 1006, Some("u")));
            store.close_connection("c2", 1000, 100_002).await.unwrap();
            assert_eq!(store.owed_disconnects("live", 10).await.unwrap().len(), 2);
            store.forget_connection("c1").await.unwrap();
            store.forget_connection("c2").await.unwrap();
            assert!(store.owed_disconnects("live", 10).await.unwrap().is_empty());
        }
    }
}
