//! Strict JSON request bodies: every field checked by name, so each error names its `param`.
//!
//! Bodies are parsed into a JSON object and then taken apart field by field; whatever is
//! left at the end is an unknown field. Wrong JSON types are 400 `invalid_field`; values of
//! the right type that a merchant must fix are 422 (decided by the route).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::http::error::ApiError;

/// Metadata bounds (DESIGN: a bound on everything).
pub const METADATA_KEYS_MAX: usize = 20;
pub const METADATA_KEY_CHARS_MAX: usize = 40;
pub const METADATA_VALUE_CHARS_MAX: usize = 500;

pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    /// The body as a JSON object; an empty body is `None` when `empty_ok`.
    pub fn parse(body: &[u8], empty_ok: bool) -> Result<Option<Fields>, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return if empty_ok {
                Ok(None)
            } else {
                Err(ApiError::bad_request(
                    "invalid_json",
                    "the request body is empty; send a JSON object",
                ))
            };
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Some(Fields {
                map,
                prefix: String::new(),
            })),
            Ok(other) => Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "the request body must be a JSON object, not {}",
                    type_name(&other)
                ),
            )),
            Err(e) => Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "the request body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )),
        }
    }

    pub fn param(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn wrong_type(&self, name: &str, expected: &str, got: &Value) -> ApiError {
        ApiError::bad_request(
            "invalid_field",
            format!(
                "{} must be {expected}, not {}",
                self.param(name),
                type_name(got)
            ),
        )
        .with_param(self.param(name))
    }

    fn missing(&self, name: &str) -> ApiError {
        ApiError::bad_request("missing_field", format!("{} is required", self.param(name)))
            .with_param(self.param(name))
    }

    /// Removes `name`; JSON `null` counts as absent.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, "a string", &other)),
        }
    }

    pub fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?.ok_or_else(|| self.missing(name))
    }

    /// A string whose length (in characters) must be within `1..=max_chars`.
    pub fn bounded_string(
        &mut self,
        name: &str,
        max_chars: usize,
        required: bool,
    ) -> Result<Option<String>, ApiError> {
        let value = if required {
            Some(self.required_string(name)?)
        } else {
            self.string(name)?
        };
        if let Some(s) = &value {
            let chars = s.chars().count();
            if chars == 0 || chars > max_chars || s.chars().any(char::is_control) {
                return Err(ApiError::unprocessable(
                    "value_invalid",
                    format!(
                        "{} must be 1 to {max_chars} printable characters",
                        self.param(name)
                    ),
                )
                .with_param(self.param(name)));
            }
        }
        Ok(value)
    }

    pub fn boolean(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong_type(name, "true or false", &other)),
        }
    }

    /// A whole non-negative number. `12.0` is one too (JSON Schema's `integer`, which
    /// docs/openapi.json promises), up to 2^53 where floats stop being exact.
    pub fn unsigned(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        const EXACT_MAX: f64 = 9_007_199_254_740_992.0;
        let whole = |n: &serde_json::Number| {
            n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=EXACT_MAX).contains(f))
                    .map(|f| f as u64)
            })
        };
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) if whole(&n).is_some() => Ok(whole(&n)),
            Some(other) => Err(self.wrong_type(name, "a whole non-negative number", &other)),
        }
    }

    /// Amounts are decimal strings; a JSON number is a type error (money is never a float).
    pub fn amount(&mut self, name: &str, required: bool) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None if required => Err(self.missing(name)),
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::bad_request(
                "invalid_field",
                format!(
                    "{} must be a decimal string like \"12.34\", not {}",
                    self.param(name),
                    type_name(&other)
                ),
            )
            .with_param(self.param(name))),
        }
    }

    pub fn object(&mut self, name: &str) -> Result<Option<Fields>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields {
                map,
                prefix: format!("{}.", self.param(name)),
            })),
            Some(other) => Err(self.wrong_type(name, "an object", &other)),
        }
    }

    pub fn metadata(&mut self) -> Result<BTreeMap<String, String>, ApiError> {
        let Some(mut meta) = self.object("metadata")? else {
            return Ok(BTreeMap::new());
        };
        let invalid = |message: String| {
            ApiError::unprocessable("metadata_invalid", message).with_param("metadata")
        };
        if meta.map.len() > METADATA_KEYS_MAX {
            return Err(invalid(format!(
                "metadata may have at most {METADATA_KEYS_MAX} keys"
            )));
        }
        let mut out = BTreeMap::new();
        for (key, value) in std::mem::take(&mut meta.map) {
            if key.is_empty() || key.chars().count() > METADATA_KEY_CHARS_MAX {
                return Err(invalid(format!(
                    "metadata keys must be 1 to {METADATA_KEY_CHARS_MAX} characters"
                )));
            }
            let Value::String(value) = value else {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "metadata values must be strings",
                )
                .with_param(format!("metadata.{key}")));
            };
            if value.chars().count() > METADATA_VALUE_CHARS_MAX {
                return Err(invalid(format!(
                    "metadata values are limited to {METADATA_VALUE_CHARS_MAX} characters"
                )));
            }
            out.insert(key, value);
        }
        Ok(out)
    }

    /// Anything not taken is unknown.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => {
                let shown: String = key.chars().take(64).collect();
                let param = format!("{}{shown}", self.prefix);
                Err(
                    ApiError::bad_request("unknown_field", format!("unknown field: {param}"))
                        .with_param(param),
                )
            }
        }
    }
}
