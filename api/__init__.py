"""kvconf REST API (FastAPI)."""
