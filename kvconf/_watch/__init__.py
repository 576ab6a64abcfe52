"""The watch protocol behind :class:`kvconf.Watcher` (invariant 5).

- ``state.py``: the local cache, pure: applying events and states, diffs, layered views.
- ``reader.py``: the cached read (``Watcher.get``), in C from ``_speedups.c`` when built.
- ``callbacks.py``: change callbacks, resync notices and typed bindings (no I/O).
- ``engine.py``: the synchronisation engine of one tenant (a ``Watcher`` holds one; the
  hub talks to it): subscribe, list, replay, resync, run callbacks.
- ``hub.py``: one shared pub/sub connection per event loop and Redis server.
- ``cluster.py``: the hub on Redis Cluster, one node hub per primary.
- ``registry.py``: which hub serves a URL (plain or Cluster; imports both hub modules)
  and which monitor serves a tenant.
- ``monitor.py``: one revision check and fleet report per process and tenant.
- ``backoff.py``: the reconnect delay, reset after a healthy connection.
- ``cache_file.py``: the optional local cache file for a cold start.
- ``fleet.py``: watchers reporting their applied revision, and reading that report.
"""
