use crate::devices::INSTANCE_STALE_MS;
use crate::{Result, Store, on_pool};

impl Store {
    /// Announces this instance as alive. Devices it holds count as online only while these
    /// heartbeats are fresh.
    pub async fn heartbeat_instance(&self, id: &str, now: i64, draining: bool) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
            r#"INSERT INTO "GatewayInstance" ("id", "startedAt", "heartbeatAt", "draining") VALUES ($1, $2, $2, $3)
               ON CONFLICT ("id") DO UPDATE SET "heartbeatAt" = excluded."heartbeatAt", "draining" = excluded."draining""#
        )
        .bind(id)
        .bind(now)
        .bind(draining)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// Removes a cleanly stopped instance and releases the devices it held.
    pub async fn remove_instance(&self, id: &str, now: i64) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(r#"UPDATE "GatewayDevice" SET "connectedInstance" = NULL, "lastSeenAt" = $1 WHERE "connectedInstance" = $2"#)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(r#"DELETE FROM "GatewayInstance" WHERE "id" = $1"#).bind(id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Finds instances whose heartbeat lapsed, releases their devices and forgets them.
    /// Returns their ids (a live instance acts for the dead, as for `$disconnect`).
    pub async fn reap_dead_instances(&self, now: i64) -> Result<Vec<String>> {
        let stale = now - INSTANCE_STALE_MS;
        let dead = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let dead: Vec<(String,)> =
                sqlx::query_as(r#"DELETE FROM "GatewayInstance" WHERE "heartbeatAt" <= $1 RETURNING "id""#)
                    .bind(stale)
                    .fetch_all(&mut *tx)
                    .await?;
            // Devices pointing at an instance that no longer exists are offline too (covers
            // instances reaped earlier while a device row was being written).
            sqlx::query(
                r#"UPDATE "GatewayDevice" SET "connectedInstance" = NULL
                   WHERE "connectedInstance" IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM "GatewayInstance" i WHERE i."id" = "GatewayDevice"."connectedInstance")"#,
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(dead)
        })?;
        Ok(dead.into_iter().map(|(id,)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::backends;

    #[tokio::test]
    async fn dead_instances_release_their_devices() {
        for (store, _guard) in backends().await {
            let u = store.create_user("a@x", "pw", 1).await.unwrap();
            let (d, _) = store.create_device(&u.id, "n", "p", &["c".into()], 1).await.unwrap();
            store.heartbeat_instance("dead", 1_000, false).await.unwrap();
            store.heartbeat_instance("live", 1_000, false).await.unwrap();
            store.mark_device_connected(&d.id, "dead", 1_000).await.unwrap();
            let now = 1_000 + crate::devices::INSTANCE_STALE_MS + 1;
            store.heartbeat_instance("live", now, false).await.unwrap();
            assert_eq!(store.reap_dead_instances(now).await.unwrap(), ["dead"]);
            let row = store.get_device(&u.id, &d.id, now).await.unwrap().unwrap();
            assert_eq!(row.connected_instance, None);
            assert!(store.reap_dead_instances(now).await.unwrap().is_empty());
        }
    }
}
