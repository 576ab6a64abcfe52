-- kvconf read_schemas: the tenant's schema generation and every schema, together.
--
-- KEYS: 1 meta, 2 schema hash.
-- Returns {schema_gen, flat HGETALL of the schema hash}.

return {
  tonumber(redis.call('HGET', KEYS[1], 'schema_gen') or '0') or 0,
  redis.call('HGETALL', KEYS[2]),
}
