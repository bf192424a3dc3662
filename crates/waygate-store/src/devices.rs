use crate::{DeviceRow, RegisterTarget, Result, Store, hash_token, on_pool, random_token};

/// An instance whose heartbeat is older than this is treated as dead: its devices are offline.
pub const INSTANCE_STALE_MS: i64 = 15_000;

/// `online` is computed, not stored: a crashed instance cannot leave devices "online".
const DEVICE_COLUMNS: &str = r#"d."id", d."userId", d."name", d."platform", d."capabilities",
    d."connectedInstance", d."createdAt", d."lastSeenAt",
    (d."connectedInstance" IS NOT NULL AND EXISTS (
        SELECT 1 FROM "GatewayInstance" i WHERE i."id" = d."connectedInstance" AND i."heartbeatAt" > $1
    )) AS "online""#;

impl Store {
    /// Registers a device; returns it with its session token (shown once, stored hashed).
    pub async fn create_device(
        &self,
        user_id: &str,
        name: &str,
        platform: &str,
        capabilities: &[String],
        now: i64,
    ) -> Result<(DeviceRow, String)> {
        let id = uuid::Uuid::now_v7().to_string();
        let token = random_token();
        let caps_json = serde_json::to_string(capabilities).expect("strings serialize");
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                r#"INSERT INTO "GatewayDevice" ("id", "userId", "name", "platform", "capabilities", "sessionTokenHash", "createdAt")
                   VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
            )
            .bind(&id)
            .bind(user_id)
            .bind(name)
            .bind(platform)
            .bind(&caps_json)
            .bind(hash_token(&token))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let mut seen = std::collections::HashSet::new();
            for cap in capabilities.iter().filter(|c| seen.insert(c.as_str())) {
                sqlx::query(
                    r#"INSERT INTO "GatewayDeviceCapability" ("deviceId", "userId", "capability") VALUES ($1, $2, $3)"#,
                )
                .bind(&id)
                .bind(user_id)
                .bind(cap)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        let device = DeviceRow {
            id,
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            platform: platform.to_owned(),
            capabilities: crate::models::Capabilities(capabilities.to_vec()),
            connected_instance: None,
            created_at: now,
            last_seen_at: None,
            online: false,
        };
        Ok((device, token))
    }

    pub async fn list_devices(&self, user_id: &str, now: i64) -> Result<Vec<DeviceRow>> {
        let sql = format!(
            r#"SELECT {DEVICE_COLUMNS} FROM "GatewayDevice" d WHERE d."userId" = $2 ORDER BY d."createdAt", d."id""#
        );
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, DeviceRow>(sqlx::AssertSqlSafe(sql))
            .bind(now - INSTANCE_STALE_MS)
            .bind(user_id)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// A device of this user (another user's device is `None`, like a missing one).
    pub async fn get_device(&self, user_id: &str, id: &str, now: i64) -> Result<Option<DeviceRow>> {
        let sql = format!(r#"SELECT {DEVICE_COLUMNS} FROM "GatewayDevice" d WHERE d."userId" = $2 AND d."id" = $3"#);
        let row = on_pool!(self, |pool| sqlx::query_as::<_, DeviceRow>(sqlx::AssertSqlSafe(sql))
            .bind(now - INSTANCE_STALE_MS)
            .bind(user_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    /// Deletes a device of this user; `false` when it does not exist for them.
    pub async fn delete_device(&self, user_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |pool| sqlx::query(r#"DELETE FROM "GatewayDevice" WHERE "userId" = $1 AND "id" = $2"#)
            .bind(user_id)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// What a `register` message is checked against.
    pub async fn register_target(&self, device_id: &str) -> Result<Option<RegisterTarget>> {
        let row = on_pool!(self, |pool| sqlx::query_as::<_, RegisterTarget>(
            r#"SELECT "id", "userId", "sessionTokenHash", "capabilities" FROM "GatewayDevice" WHERE "id" = $1"#
        )
        .bind(device_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Records that `instance` now holds the device's socket.
    pub async fn mark_device_connected(&self, device_id: &str, instance: &str, now: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            r#"UPDATE "GatewayDevice" SET "connectedInstance" = $1, "lastSeenAt" = $2 WHERE "id" = $3"#
        )
        .bind(instance)
        .bind(now)
        .bind(device_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Clears the connection unless another instance took the device over meanwhile.
    pub async fn mark_device_disconnected(&self, device_id: &str, instance: &str, now: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            r#"UPDATE "GatewayDevice" SET "connectedInstance" = NULL, "lastSeenAt" = $1
               WHERE "id" = $2 AND "connectedInstance" = $3"#
        )
        .bind(now)
        .bind(device_id)
        .bind(instance)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// `(registered, online)`: does the user have a device with this capability (and id, when
    /// given), and is one of them connected to a live instance?
    pub async fn capable_devices(
        &self,
        user_id: &str,
        capability: &str,
        device_id: Option<&str>,
        now: i64,
    ) -> Result<(bool, bool)> {
        let row: (i64, i64) = on_pool!(self, |pool| {
            sqlx::query_as(
            r#"SELECT COUNT(*),
                      COALESCE(SUM(CASE WHEN d."connectedInstance" IS NOT NULL AND EXISTS (
                          SELECT 1 FROM "GatewayInstance" i WHERE i."id" = d."connectedInstance" AND i."heartbeatAt" > $1
                      ) THEN 1 ELSE 0 END), 0)
               FROM "GatewayDeviceCapability" dc JOIN "GatewayDevice" d ON d."id" = dc."deviceId"
               WHERE dc."userId" = $2 AND dc."capability" = $3 AND ($4 IS NULL OR d."id" = $4)"#
        )
        .bind(now - INSTANCE_STALE_MS)
        .bind(user_id)
        .bind(capability)
        .bind(device_id)
        .fetch_one(pool)
        .await
        })?;
        Ok((row.0 > 0, row.1 > 0))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::backends;

    #[tokio::test]
    async fn devices_belong_to_their_user_and_track_presence() {
        for (store, _guard) in backends().await {
            let a = store.create_user("a@x", "pw", 1).await.unwrap();
            let b = store.create_user("b@x", "pw", 1).await.unwrap();
            let caps = vec!["desktop".to_owned(), "fs".to_owned(), "desktop".to_owned()];
            let (dev, token) = store.create_device(&a.id, "Laptop", "macos", &caps, 10).await.unwrap();
            assert_eq!(token.len(), 43);

            assert_eq!(store.list_devices(&a.id, 20).await.unwrap().len(), 1);
            assert!(store.list_devices(&b.id, 20).await.unwrap().is_empty());
            assert!(store.get_device(&b.id, &dev.id, 20).await.unwrap().is_none(), "other user sees nothing");

            assert_eq!(store.capable_devices(&a.id, "fs", None, 20).await.unwrap(), (true, false));
            assert_eq!(store.capable_devices(&a.id, "gpu", None, 20).await.unwrap(), (false, false));
            assert_eq!(store.capable_devices(&a.id, "fs", Some("other"), 20).await.unwrap(), (false, false));

            store.heartbeat_instance("i1", 100, false).await.unwrap();
            store.mark_device_connected(&dev.id, "i1", 100).await.unwrap();
            assert_eq!(store.capable_devices(&a.id, "fs", Some(&dev.id), 100).await.unwrap(), (true, true));
            let d = store.get_device(&a.id, &dev.id, 100).await.unwrap().unwrap();
            assert!(d.online);
            assert_eq!(d.last_seen_at, Some(100));
            // The instance stops heartbeating: its devices read as offline.
            let later = 100 + super::INSTANCE_STALE_MS + 1;
            assert!(!store.get_device(&a.id, &dev.id, later).await.unwrap().unwrap().online);

            // A stale disconnect from another instance does not clear the new holder.
            store.mark_device_disconnected(&dev.id, "i0", 110).await.unwrap();
            assert!(store.get_device(&a.id, &dev.id, 110).await.unwrap().unwrap().online);
            store.mark_device_disconnected(&dev.id, "i1", 120).await.unwrap();
            assert!(!store.get_device(&a.id, &dev.id, 120).await.unwrap().unwrap().online);

            assert!(!store.delete_device(&b.id, &dev.id).await.unwrap());
            assert!(store.delete_device(&a.id, &dev.id).await.unwrap());
            assert_eq!(
                store.capable_devices(&a.id, "fs", None, 20).await.unwrap(),
                (false, false),
                "capabilities cascade"
            );
        }
    }
}
