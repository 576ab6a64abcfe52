"""kvconf's REST facade (FastAPI), served by ``kvconf serve``.

::

    app.py        create_app(): lifespan (one store), routes, the one error handler
    errors.py     exception → status table (and the CloudBrain error shape)
    deps.py       the store, tenant access checks, masking, If-Match
    auth.py       bearer tokens with rights per tenant, stored hashed
    models.py     request bodies (msgspec) and their OpenAPI
    limits.py     request body limit (413), pure ASGI
    metrics.py    Prometheus metrics, pure ASGI timing
    sse.py        the gap-free watch stream
    preview.py    dry-run writes
    provision.py  tenants from templates and clones
    routes/       one module per resource
"""
