"""The Redis plumbing: the only code that knows Redis names, the wire protocol
and redis-py's internals.

- ``names.py``: every Redis key and channel name kvconf uses, and name validation
  (tenant isolation is one file to audit).
- ``connect.py``: opening clients for a URL, a Cluster URL or the embedded default.
- ``scripts.py``: the server-side scripts, loaded once and called by SHA, and the
  pipelined runner that sends them.
- ``lua/``: the scripts themselves (write, read_state, read_log, schema, tenant,
  snapshot_read, restore).
- ``pubsub.py``: the watchers' pub/sub connection, fed from the socket.
"""
