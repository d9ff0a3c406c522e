"""Package data: the spec grammar (surgery.lark), shipped as surgeon.grammar."""
