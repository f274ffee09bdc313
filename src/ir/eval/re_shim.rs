//! Temporary: replaced by `ir::re2` (RE2 semantics) when it lands.
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct RegexCache(Mutex<HashMap<String, regex::Regex>>);

impl RegexCache {
    pub fn is_full_match(&self, pattern: &str, text: &str) -> Result<bool, String> {
        let mut m = self.0.lock().map_err(|e| e.to_string())?;
        if !m.contains_key(pattern) {
            let r = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?;
            m.insert(pattern.to_string(), r);
        }
        Ok(m.get(pattern).is_some_and(|r| r.is_match(text)))
    }
}
