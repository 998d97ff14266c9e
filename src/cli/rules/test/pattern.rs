//! A case's `message`: a regular expression in the dialect of Rego's `regex.match`.

/// A case's `message`: a regular expression, unanchored, in the dialect Rego's `regex.match`
/// uses (Rust's `regex` syntax), evaluated by the same engine as the Rego rules.
pub(super) struct MessagePattern {
    pub(super) text: String,
    /// Prepared with [`MATCHER`]; cloned per match.
    engine: regorus::Engine,
}

const MATCHER: &str = "package syncgate_rules_test\n\n\
                       valid := regex.is_valid(input.pattern)\n\n\
                       matches := regex.match(input.pattern, input.text)\n";

impl MessagePattern {
    pub(super) fn new(text: &str) -> Result<Self, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("matcher.rego".to_owned(), MATCHER.to_owned())
            .map_err(|e| format!("cannot prepare the message matcher: {e}"))?;
        let pattern = Self {
            text: text.to_owned(),
            engine,
        };
        match pattern.eval("valid", "") {
            Some(true) => Ok(pattern),
            _ => Err(format!(
                "message {text:?} is not a valid regular expression"
            )),
        }
    }

    pub(super) fn is_match(&self, message: &str) -> bool {
        self.eval("matches", message) == Some(true)
    }

    fn eval(&self, rule: &str, message: &str) -> Option<bool> {
        let mut engine = self.engine.clone();
        let input = serde_json::json!({ "pattern": self.text, "text": message });
        engine.set_input(regorus::Value::from(input));
        engine
            .eval_rule(format!("data.syncgate_rules_test.{rule}"))
            .ok()
            .and_then(|v| v.as_bool().ok().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_patterns_are_unanchored_regular_expressions() {
        let p = MessagePattern::new("not on the (sync )?allow-list").unwrap();
        assert!(p.is_match("rule 'a': partner x is not on the sync allow-list; ..."));
        assert!(!p.is_match("rule 'a': partner x is on the deny-list"));
        assert!(MessagePattern::new("unclosed (group").is_err());
    }
}
