//! `MISSIVE_<SETTING>` environment variables for every setting, and the redacted TOML of
//! `missived --print-config`.

use super::settings::{Config, ConfigError};

impl Config {
    /// Sets each setting named by a `MISSIVE_<SETTING>` variable (upper case, e.g.
    /// `MISSIVE_MAX_GROUP_SIZE=500`): lists comma-separated, an empty value unsets an optional
    /// setting. Variables that name no setting (the CLI's `MISSIVE_USER`, ...) are ignored.
    pub fn with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        use serde_json::Value;
        let to_err = |e: serde_json::Error| ConfigError(e.to_string());
        let Value::Object(mut map) = serde_json::to_value(&self).map_err(to_err)? else {
            return Err(ConfigError("settings are not a table".into()));
        };
        let mut changed = false;
        for (name, raw) in env {
            let Some(key) = name.strip_prefix("MISSIVE_").map(str::to_ascii_lowercase) else {
                continue;
            };
            let Some(current) = map.get(&key) else {
                continue;
            };
            // The value as the setting's type; an optional setting's type is not known from
            // its (unset) default, so a number or boolean there may also be meant as text.
            let typed = env_value(current, &raw);
            let mut tries = vec![typed.clone()];
            if !typed.is_string() && !typed.is_null() && !current.is_array() {
                tries.push(Value::String(raw.clone()));
            }
            let mut error = None;
            for value in tries {
                map.insert(key.clone(), value);
                // Checked one by one, so the error names the variable at fault.
                match serde_json::from_value::<Config>(Value::Object(map.clone())) {
                    Ok(_) => {
                        error = None;
                        break;
                    }
                    Err(e) => error = error.or(Some(e)),
                }
            }
            if let Some(e) = error {
                return Err(ConfigError(format!("{key} (environment {name}): {e}")));
            }
            changed = true;
        }
        if !changed {
            return Ok(self);
        }
        serde_json::from_value(Value::Object(map)).map_err(to_err)
    }

    /// The configuration as TOML, with `secret`, `api_key` and the webhook secrets redacted and unset optional
    /// settings listed as comments.
    pub fn to_toml_redacted(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        // Where backups go, also when derived from data_dir.
        shown.backup_dir = self.backup_path();
        for value in [&mut shown.secret, &mut shown.api_key]
            .into_iter()
            .flatten()
        {
            *value = format!("<redacted: {} characters>", value.len());
        }
        for value in [
            &mut shown.push_webhook_secret,
            &mut shown.send_hook_secret,
            &mut shown.event_webhook_secret,
        ] {
            if !value.is_empty() {
                *value = format!("<redacted: {} characters>", value.len());
            }
        }
        let mut out = toml::to_string(&shown).map_err(|e| ConfigError(e.to_string()))?;
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (key, value) in map {
                if value.is_null() {
                    out.push_str(&format!("# {key}: not set\n"));
                }
            }
        }
        Ok(out)
    }
}

/// An environment variable's text as a value of the setting's type (as the default shows it).
fn env_value(current: &serde_json::Value, raw: &str) -> serde_json::Value {
    use serde_json::Value;
    let scalar = |raw: &str| -> Value {
        if let Ok(n) = raw.parse::<u64>() {
            return n.into();
        }
        if let Ok(n) = raw.parse::<i64>() {
            return n.into();
        }
        match raw {
            "true" => true.into(),
            "false" => false.into(),
            _ => Value::String(raw.to_owned()),
        }
    };
    match current {
        Value::Array(_) => raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned()))
            .collect(),
        Value::String(_) => Value::String(raw.to_owned()),
        Value::Null if raw.is_empty() => Value::Null,
        _ => scalar(raw),
    }
}
