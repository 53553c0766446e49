"""Kibana detection-rule fields that only the server sets: shared by validation and the Kibana target."""

from __future__ import annotations

# Present in Kibana's responses and exports, never written in rule files, never sent, never
# compared: validation flags them in a rule file and the Kibana normal form drops them.
SERVER_FIELDS = frozenset(
    {
        "id",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "revision",
        "immutable",
        "rule_source",
        "execution_summary",
        "outcome",
        "alias_purpose",
        "alias_target_id",
    }
)
