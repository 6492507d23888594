//! Merging a TOML file and `KASSA_*` environment variables over the defaults.

use crate::ConfigError;

/// Aliases kept short because operators type them most.
const ALIASES: &[(&str, &str)] = &[
    ("KASSA_DATA_DIR", "store.data_dir"),
    ("KASSA_AMQP_URL", "notifications.rabbitmq.url"),
    ("KASSA_POSTGRES_URL", "postgres.url"),
    ("KASSA_REDIS_URL", "redis.url"),
];

/// Variables that are not settings (read elsewhere) and must not be reported as unknown.
const NOT_SETTINGS: &[&str] = &[
    "KASSA_LOG",
    "KASSA_BIN",
    "KASSA_CONFIG",
    "KASSA_URL",
    "KASSA_MASTER_KEY",
];

/// Merge `from` into `into`; every key in `from` must exist in `into` (the defaults).
pub(crate) fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => {
                merge(inner, value, &path)?
            }
            (Some(slot), value) => *slot = value,
            (None, _) => {
                return Err(ConfigError::Invalid {
                    key: path,
                    source_name: "config file".into(),
                    reason: "unknown key".into(),
                });
            }
        }
    }
    Ok(())
}

/// Apply `KASSA_*` variables. The value is parsed as the type of the default it replaces.
pub(crate) fn apply_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut leaves = Vec::new();
    collect_leaves(tree, "", &mut leaves);
    for (name, raw) in env {
        if !name.starts_with("KASSA_") || NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let path = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map(|(_, path)| path.to_string())
            .or_else(|| leaves.iter().find(|leaf| env_name(leaf) == name).cloned());
        let Some(path) = path else {
            tracing::warn!(variable = %name, "ignoring KASSA_ variable that names no setting");
            continue;
        };
        set_leaf(tree, &path, &raw, &name)?;
    }
    Ok(())
}

fn env_name(path: &str) -> String {
    format!("KASSA_{}", path.replace('.', "_").to_ascii_uppercase())
}

fn collect_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => collect_leaves(inner, &path, out),
            _ => out.push(path),
        }
    }
}

fn set_leaf(tree: &mut toml::Table, path: &str, raw: &str, var: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: path.to_string(),
        source_name: var.to_string(),
        reason,
    };
    let mut table = tree;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            let slot = table
                .get_mut(part)
                .ok_or_else(|| invalid("unknown key".into()))?;
            *slot = match slot {
                toml::Value::Integer(_) => toml::Value::Integer(
                    raw.trim()
                        .parse()
                        .map_err(|_| invalid(format!("`{raw}` is not a whole number")))?,
                ),
                // A list of names (its default holds strings): comma-separated, trimmed.
                toml::Value::Array(items) if items.first().is_some_and(|item| item.is_str()) => {
                    toml::Value::Array(
                        raw.split(',')
                            .map(str::trim)
                            .filter(|part| !part.is_empty())
                            .map(|part| toml::Value::String(part.to_string()))
                            .collect(),
                    )
                }
                toml::Value::Array(_) => toml::Value::Array(
                    raw.split(',')
                        .map(|part| part.trim().parse::<i64>().map(toml::Value::Integer))
                        .collect::<Result<_, _>>()
                        .map_err(|_| {
                            invalid(format!(
                                "`{raw}` is not a comma-separated list of whole numbers"
                            ))
                        })?,
                ),
                toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(invalid(format!("`{raw}` is not true or false"))),
                }),
                _ => toml::Value::String(raw.to_string()),
            };
            return Ok(());
        }
        table = match table.get_mut(part) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return Err(invalid("unknown key".into())),
        };
    }
    Err(invalid("empty key".into()))
}
