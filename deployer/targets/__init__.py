"""Deploy targets (Kibana, OpenSearch) and the shared, target-agnostic planner."""
