use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use waygate_store::{Store, StoreError};

use super::{Failure, db_flags, load_config};
use crate::cli::DbArgs;

async fn open_store(file: Option<PathBuf>, db: &DbArgs) -> Result<Store, Failure> {
    let config = load_config(file, db_flags(db))?;
    let store = Store::connect(config.database_url.expose()).await.context("cannot open the database")?;
    store.migrate().await.context("migrations failed")?;
    Ok(store)
}

/// `waygate migrate`.
pub async fn migrate(file: Option<PathBuf>, db: DbArgs) -> Result<(), Failure> {
    open_store(file, &db).await?;
    println!("migrations applied");
    Ok(())
}

/// `waygate user add EMAIL`: the password comes from standard input (first line).
pub async fn add(file: Option<PathBuf>, db: DbArgs, email: String) -> Result<(), Failure> {
    if !email.contains('@') {
        return Err(anyhow::anyhow!("{email:?} is not an email address").into());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password for {email}: ");
        std::io::stderr().flush()?;
    }
    let mut password = String::new();
    stdin.lock().read_line(&mut password).context("cannot read the password from stdin")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        return Err(anyhow::anyhow!("the password must have at least 8 characters").into());
    }
    let store = open_store(file, &db).await?;
    match store.create_user(&email, password, waygate_telemetry::now_millis()).await {
        Ok(user) => {
            println!("created user {} ({})", user.email, user.id);
            Ok(())
        }
        Err(StoreError::Conflict(_)) => Err(anyhow::anyhow!("a user with email {email} already exists").into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot create the user").into()),
    }
}
