"""The write path of :class:`kvconf.Store`, in the order a write takes it.

- ``plan.py``: the validation plan of a change set (the write, the dry run, import), pure.
- ``ops.py``: a change set turned into the write script's arguments, and the
  script's reply turned into a :class:`~kvconf.models.WriteResult` (pure).
- ``dryrun.py``: a change set checked as the write checks it, against the state
  it would meet (the API's and the CLI's dry runs).
"""
