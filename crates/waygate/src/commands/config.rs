use std::path::PathBuf;

use super::{Failure, load_config};

/// `waygate config check`: the effective configuration as TOML, or every problem (exit 64).
pub fn check(file: Option<PathBuf>) -> Result<(), Failure> {
    let config = load_config(file, Default::default())?;
    print!("{}", config.render_toml());
    Ok(())
}
