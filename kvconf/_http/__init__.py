"""The service-tier client: kvconf's Store over a ``kvconf serve`` REST API."""
