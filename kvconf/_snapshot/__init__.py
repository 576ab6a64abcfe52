"""Snapshots and durability behind :mod:`kvconf.snapshot`.

- ``format.py``: the file format, pure: writing safely, reading with checks.
- ``capture.py``: reading tenants out of Redis at one revision each.
- ``restore.py``: writing captured tenants back.
- ``journal.py``: the embedded store's journal after a base snapshot.
- ``embedded.py``: the embedded default, fakeredis made durable in the data dir.
- ``background.py``: ``kvconf serve``'s background services (persistence, schedules).
"""
