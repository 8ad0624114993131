"""Pure logic, no Kafka: validation, dedup, sessions, features, candidates, pages, experiments."""
