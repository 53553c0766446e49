"""Exception lists as code: files, schema, validation, the offline filter and the Kibana plan.

Kibana applies a rule's exception items as a Query-DSL ``must_not`` filter on every event before
EQL sees it (docs/exceptions.md). This package reads the repository's exception list and value
list files, checks them, and evaluates them with the same semantics.
"""
