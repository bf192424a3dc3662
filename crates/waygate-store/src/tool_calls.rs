//! The `"GatewayToolCall"` queue: insert, claim with a lease and a fencing token, finish,
//! expire, sweep and prune. Every state change is a single conditional UPDATE, so a row can
//! reach exactly one terminal state whatever instance or timer gets there first.

use waygate_proto::device::DispatchQueueCounters;

use crate::{Backend, CallOutcome, Claimed, NewToolCall, QueueEvent, Result, Store, ToolCallRow, on_pool};

const ROW_COLUMNS: &str = r#""id", "userId", "requiredCapability", "tool", "args", "deviceId", "assignedDeviceId",
    "status", "result", "errorCode", "errorMessage", "attempt", "acceptedBy", "claimedBy", "leaseExpiresAt",
    "createdAt", "claimedAt", "expiresAt", "finishedAt""#;

/// On expiry a call that was never claimed failed for want of a device; a claimed one timed out.
const EXPIRE_SET: &str = r#""status" = CASE WHEN "status" = 'pending' THEN 'failed' ELSE 'expired' END,
    "errorCode" = CASE WHEN "status" = 'pending' THEN 'no_capable_device' ELSE 'tool_call_timeout' END,
    "errorMessage" = CASE WHEN "status" = 'pending'
        THEN 'no device with the capability came online before the deadline'
        ELSE 'the device did not answer before the deadline' END,
    "leaseExpiresAt" = NULL"#;

impl Store {
    pub async fn insert_tool_call(&self, new: &NewToolCall) -> Result<ToolCallRow> {
        let id = new.id.clone();
        let args = new.args.to_string();
        on_pool!(self, |pool| sqlx::query(
            r#"INSERT INTO "GatewayToolCall" ("id", "userId", "requiredCapability", "tool", "args", "deviceId",
                   "status", "attempt", "acceptedBy", "createdAt", "expiresAt")
               VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $9)"#
        )
        .bind(&id)
        .bind(&new.user_id)
        .bind(&new.capability)
        .bind(&new.tool)
        .bind(&args)
        .bind(&new.device_id)
        .bind(&new.accepted_by)
        .bind(new.now)
        .bind(new.expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.events.send(QueueEvent::NewCall { user_id: new.user_id.clone(), capability: new.capability.clone() });
        Ok(ToolCallRow {
            id,
            user_id: new.user_id.clone(),
            required_capability: new.capability.clone(),
            tool: new.tool.clone(),
            args,
            device_id: new.device_id.clone(),
            assigned_device_id: None,
            status: "pending".into(),
            result: None,
            error_code: None,
            error_message: None,
            attempt: 0,
            accepted_by: new.accepted_by.clone(),
            claimed_by: None,
            lease_expires_at: None,
            created_at: new.now,
            claimed_at: None,
            expires_at: new.expires_at,
            finished_at: None,
        })
    }

    /// A call of this user (another user's call reads as missing).
    pub async fn get_tool_call(&self, user_id: &str, id: &str) -> Result<Option<ToolCallRow>> {
        let sql = format!(r#"SELECT {ROW_COLUMNS} FROM "GatewayToolCall" WHERE "id" = $1 AND "userId" = $2"#);
        let row = on_pool!(self, |pool| sqlx::query_as::<_, ToolCallRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user_id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    /// Claims up to `limit` pending calls that a device connected to `instance` can serve,
    /// oldest first. Each claim bumps `attempt`, the fencing token every later write checks.
    pub async fn claim_tool_calls(&self, instance: &str, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<Claimed>> {
        let lock = match self.backend {
            Backend::Postgres(_) => "FOR UPDATE OF c SKIP LOCKED",
            Backend::Sqlite(_) => "",
        };
        let sql = format!(
            r#"UPDATE "GatewayToolCall"
               SET "status" = 'processing', "claimedBy" = $1, "attempt" = "attempt" + 1,
                   "claimedAt" = $2, "leaseExpiresAt" = $3
               WHERE "status" = 'pending' AND "id" IN (
                   SELECT c."id" FROM "GatewayToolCall" c
                   WHERE c."status" = 'pending' AND c."expiresAt" > $2
                     AND EXISTS (
                         SELECT 1 FROM "GatewayDeviceCapability" dc JOIN "GatewayDevice" d ON d."id" = dc."deviceId"
                         WHERE dc."userId" = c."userId" AND dc."capability" = c."requiredCapability"
                           AND d."connectedInstance" = $1
                           AND (c."deviceId" IS NULL OR c."deviceId" = d."id"))
                   ORDER BY c."createdAt"
                   LIMIT $4
                   {lock})
               RETURNING "id", "userId", "requiredCapability", "tool", "args", "deviceId", "attempt", "createdAt", "expiresAt""#
        );
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, Claimed>(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Records the outcome of a claimed call. Fenced: only the claim that holds `attempt` on
    /// `instance` may finish it, and only once. `false` means someone else already did.
    pub async fn finish_claimed(
        &self,
        id: &str,
        attempt: i64,
        instance: &str,
        device_id: Option<&str>,
        outcome: &CallOutcome,
        now: i64,
    ) -> Result<bool> {
        let (status, result, code, message) = match outcome {
            CallOutcome::Completed { result } => ("completed", Some(result.to_string()), None, None),
            CallOutcome::Failed { code, message, detail } => {
                ("failed", detail.as_ref().map(|d| d.to_string()), Some(code.as_str()), Some(message.as_str()))
            }
        };
        let n = on_pool!(self, |pool| sqlx::query(
            r#"UPDATE "GatewayToolCall"
               SET "status" = $1, "result" = $2, "errorCode" = $3, "errorMessage" = $4, "finishedAt" = $5,
                   "assignedDeviceId" = COALESCE($6, "assignedDeviceId"), "leaseExpiresAt" = NULL
               WHERE "id" = $7 AND "attempt" = $8 AND "claimedBy" = $9 AND "status" = 'processing'"#
        )
        .bind(status)
        .bind(result)
        .bind(code)
        .bind(message)
        .bind(now)
        .bind(device_id)
        .bind(id)
        .bind(attempt)
        .bind(instance)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        if n > 0 {
            self.events.send(QueueEvent::Finished { call_id: id.to_owned() });
        }
        Ok(n > 0)
    }

    /// Gives a claimed call back to the queue (its device left before delivery), fenced like
    /// `finish_claimed`. Other instances are woken as for a new call.
    pub async fn release_claim(&self, id: &str, attempt: i64, instance: &str) -> Result<bool> {
        let row: Option<(String, String)> = on_pool!(self, |pool| {
            sqlx::query_as(
            r#"UPDATE "GatewayToolCall" SET "status" = 'pending', "claimedBy" = NULL, "claimedAt" = NULL, "leaseExpiresAt" = NULL
               WHERE "id" = $1 AND "attempt" = $2 AND "claimedBy" = $3 AND "status" = 'processing'
               RETURNING "userId", "requiredCapability""#
        )
        .bind(id)
        .bind(attempt)
        .bind(instance)
        .fetch_optional(pool)
        .await
        })?;
        if let Some((user_id, capability)) = &row {
            self.events.send(QueueEvent::NewCall { user_id: user_id.clone(), capability: capability.clone() });
        }
        Ok(row.is_some())
    }

    /// Fails a call that no instance has claimed yet (for example "no capable device online").
    pub async fn fail_unclaimed(&self, id: &str, code: &str, message: &str, now: i64) -> Result<bool> {
        let n = on_pool!(self, |pool| {
            sqlx::query(
            r#"UPDATE "GatewayToolCall" SET "status" = 'failed', "errorCode" = $1, "errorMessage" = $2, "finishedAt" = $3
               WHERE "id" = $4 AND "status" = 'pending'"#
        )
        .bind(code)
        .bind(message)
        .bind(now)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        if n > 0 {
            self.events.send(QueueEvent::Finished { call_id: id.to_owned() });
        }
        Ok(n > 0)
    }

    /// Ends one call whose deadline passed (see `EXPIRE_SET`) and returns its new status;
    /// `None`: it had already finished.
    pub async fn expire_tool_call(&self, id: &str, now: i64) -> Result<Option<String>> {
        let sql = format!(
            r#"UPDATE "GatewayToolCall" SET {EXPIRE_SET}, "finishedAt" = $1
               WHERE "id" = $2 AND "status" IN ('pending', 'processing') RETURNING "status""#
        );
        let row: Option<(String,)> = on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        if row.is_some() {
            self.events.send(QueueEvent::Finished { call_id: id.to_owned() });
        }
        Ok(row.map(|(s,)| s))
    }

    /// Ends every call whose deadline passed: the safety net when the accepting request is
    /// gone. Returns `(id, new status)` pairs.
    pub async fn sweep_expired(&self, now: i64) -> Result<Vec<(String, String)>> {
        let sql = format!(
            r#"UPDATE "GatewayToolCall" SET {EXPIRE_SET}, "finishedAt" = $1
               WHERE "expiresAt" <= $1 AND "status" IN ('pending', 'processing') RETURNING "id", "status""#
        );
        let rows: Vec<(String, String)> =
            on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(pool).await)?;
        for (id, _) in &rows {
            self.events.send(QueueEvent::Finished { call_id: id.clone() });
        }
        Ok(rows)
    }

    /// Fails calls whose claimer stopped renewing its lease (crashed or partitioned). The call
    /// may already have reached a device, so it is failed rather than run again: at most once.
    pub async fn fail_lapsed_leases(&self, now: i64) -> Result<Vec<String>> {
        let ids: Vec<(String,)> = on_pool!(self, |pool| sqlx::query_as(
            r#"UPDATE "GatewayToolCall"
               SET "status" = 'failed', "errorCode" = 'device_disconnected',
                   "errorMessage" = 'the instance holding the device stopped before the call finished',
                   "finishedAt" = $1, "leaseExpiresAt" = NULL
               WHERE "status" = 'processing' AND "leaseExpiresAt" <= $1 RETURNING "id""#
        )
        .bind(now)
        .fetch_all(pool)
        .await)?;
        Ok(self.announce_finished(ids))
    }

    /// Extends the lease of every call this instance is still working on.
    pub async fn renew_leases(&self, instance: &str, now: i64, lease_ms: i64) -> Result<u64> {
        let n = on_pool!(self, |pool| {
            sqlx::query(
            r#"UPDATE "GatewayToolCall" SET "leaseExpiresAt" = $1 WHERE "claimedBy" = $2 AND "status" = 'processing'"#
        )
        .bind(now + lease_ms)
        .bind(instance)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        Ok(n)
    }

    /// Queue counters across every instance (from the database, not from memory).
    pub async fn queue_counters(&self, now: i64) -> Result<DispatchQueueCounters> {
        let hour_ago = now - 3_600_000;
        let row: (i64, i64, i64, i64, i64) = on_pool!(self, |pool| sqlx::query_as(
            r#"SELECT
                 COALESCE(SUM(CASE WHEN "status" = 'pending' THEN 1 ELSE 0 END), 0),
                 COALESCE(SUM(CASE WHEN "status" = 'processing' THEN 1 ELSE 0 END), 0),
                 COALESCE(SUM(CASE WHEN "status" = 'completed' AND "finishedAt" > $1 THEN 1 ELSE 0 END), 0),
                 COALESCE(SUM(CASE WHEN "status" = 'failed' AND "finishedAt" > $1 THEN 1 ELSE 0 END), 0),
                 COALESCE(SUM(CASE WHEN "status" = 'expired' AND "finishedAt" > $1 THEN 1 ELSE 0 END), 0)
               FROM "GatewayToolCall"
               WHERE "status" IN ('pending', 'processing') OR "finishedAt" > $1"#
        )
        .bind(hour_ago)
        .fetch_one(pool)
        .await)?;
        Ok(DispatchQueueCounters {
            pending: row.0 as u64,
            processing: row.1 as u64,
            completed_last_hour: row.2 as u64,
            failed_last_hour: row.3 as u64,
            expired_last_hour: row.4 as u64,
        })
    }

    /// Deletes finished calls older than `before`.
    pub async fn prune_tool_calls(&self, before: i64) -> Result<u64> {
        let n = on_pool!(self, |pool| sqlx::query(
            r#"DELETE FROM "GatewayToolCall" WHERE "finishedAt" IS NOT NULL AND "finishedAt" < $1"#
        )
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    fn announce_finished(&self, ids: Vec<(String,)>) -> Vec<String> {
        ids.into_iter()
            .map(|(id,)| {
                self.events.send(QueueEvent::Finished { call_id: id.clone() });
                id
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
