use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::{Result, Store, StoreError, User, hash_token, on_pool, random_token};

/// Verified against when the email is unknown, so a miss costs as much time as a hit.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let salt = SaltString::encode_b64(&[7u8; 16]).expect("static salt");
            Argon2::default().hash_password(b"waygate-dummy-password", &salt).map(|h| h.to_string()).unwrap_or_default()
        })
        .clone()
}

impl Store {
    /// Creates a user with an argon2id password hash.
    pub async fn create_user(&self, email: &str, password: &str, now: i64) -> Result<User> {
        let email = normalize_email(email);
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || {
            let salt =
                SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| StoreError::Hash(e.to_string()))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| StoreError::Hash(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Hash(e.to_string()))??;
        let id = uuid::Uuid::now_v7().to_string();
        let res = on_pool!(self, |pool| sqlx::query(
            r#"INSERT INTO "User" ("id", "email", "passwordHash", "createdAt") VALUES ($1, $2, $3, $4)"#
        )
        .bind(&id)
        .bind(&email)
        .bind(&hash)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()));
        match res {
            Ok(_) => Ok(User { id, email, created_at: now }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict("user")),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks an email and password; `None` for either being wrong.
    pub async fn authenticate(&self, email: &str, password: &str) -> Result<Option<User>> {
        let email = normalize_email(email);
        let row: Option<(String, String, String, i64)> = on_pool!(self, |pool| sqlx::query_as(
            r#"SELECT "id", "email", "passwordHash", "createdAt" FROM "User" WHERE "email" = $1"#
        )
        .bind(&email)
        .fetch_optional(pool)
        .await)?;
        let stored = row.as_ref().map(|r| r.2.clone());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            let stored = stored.unwrap_or_else(dummy_hash);
            PasswordHash::new(&stored)
                .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(|e| StoreError::Hash(e.to_string()))?;
        Ok(match row {
            Some((id, email, _, created_at)) if ok => Some(User { id, email, created_at }),
            _ => None,
        })
    }

    /// Starts a session; the returned token is shown once and stored only as a hash.
    pub async fn create_session(&self, user_id: &str, now: i64, ttl_ms: i64) -> Result<String> {
        let token = random_token();
        on_pool!(self, |pool| sqlx::query(
            r#"INSERT INTO "UserSession" ("tokenHash", "userId", "createdAt", "expiresAt") VALUES ($1, $2, $3, $4)"#
        )
        .bind(hash_token(&token))
        .bind(user_id)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(token)
    }

    /// The user a live session token belongs to.
    pub async fn session_user(&self, token: &str, now: i64) -> Result<Option<User>> {
        let user = on_pool!(self, |pool| sqlx::query_as::<_, User>(
            r#"SELECT u."id", u."email", u."createdAt" FROM "UserSession" s JOIN "User" u ON u."id" = s."userId"
               WHERE s."tokenHash" = $1 AND s."expiresAt" > $2"#
        )
        .bind(hash_token(token))
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(user)
    }

    pub async fn delete_session(&self, token: &str) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(r#"DELETE FROM "UserSession" WHERE "tokenHash" = $1"#)
            .bind(hash_token(token))
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn prune_sessions(&self, now: i64) -> Result<u64> {
        let r = on_pool!(self, |pool| sqlx::query(r#"DELETE FROM "UserSession" WHERE "expiresAt" <= $1"#)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(r)
    }
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use crate::testing::backends;

    #[tokio::test]
    async fn users_log_in_and_sessions_expire() {
        for (store, _guard) in backends().await {
            let u = store.create_user("Ada@Example.com ", "correct horse", 1).await.unwrap();
            assert_eq!(u.email, "ada@example.com");
            assert!(matches!(
                store.create_user("ada@example.com", "x", 2).await,
                Err(crate::StoreError::Conflict("user"))
            ));
            assert!(store.authenticate("ada@example.com", "wrong").await.unwrap().is_none());
            assert!(store.authenticate("nobody@example.com", "correct horse").await.unwrap().is_none());
            let who = store.authenticate("ADA@example.com", "correct horse").await.unwrap().unwrap();
            assert_eq!(who.id, u.id);

            let token = store.create_session(&u.id, 1000, 500).await.unwrap();
            assert_eq!(store.session_user(&token, 1499).await.unwrap().unwrap().id, u.id);
            assert!(store.session_user(&token, 1500).await.unwrap().is_none(), "expired");
            assert!(store.session_user("not-a-token", 1000).await.unwrap().is_none());
            store.delete_session(&token).await.unwrap();
            assert!(store.session_user(&token, 1000).await.unwrap().is_none());
        }
    }
}
