"""Route modules, one per resource: cloudbrain (per-AI), tenants, keys, history,
schemas, watch (SSE, fleet), snapshots, tokens, ops (health, readiness, metrics)."""
