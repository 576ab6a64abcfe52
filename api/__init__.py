"""kvconf's REST facade (FastAPI), served by ``kvconf serve``; installed as ``kvconf.api``.

::

    app.py        create_app(): lifespan (one store), routes, the one error handler
    errors.py     exception → status table (and the CloudBrain error shape)
    deps.py       the store, tenant and namespace access checks, masking, If-Match
    query.py      unknown query parameters refused on routes that change data
    auth.py       principals: bearer tokens with rights per tenant or namespace
    models.py     request and response bodies (msgspec) and their OpenAPI
    openapi.py    the contract (operation ids, error bodies, examples), offline docs
    requestid.py  X-Request-ID, pure ASGI
    limits.py     request body limit (413), pure ASGI
    metrics.py    Prometheus metrics, pure ASGI timing
    cache.py      the read cache: a watcher per recently read tenant
    hot.py        lean handlers in front of the hottest routes
    fanout.py     one feed per tenant per worker for every watch stream
    sse.py        the gap-free watch stream of one caller
    preview.py    dry-run writes
    provision.py  tenants from templates and clones (kvconf.tenants)
    _starlette.py the one shim over Starlette internals
    console/      the web console's static files (routes/console.py serves them)
    routes/       one module per resource
"""
