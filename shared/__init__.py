"""geocatalog-ingest: the deployable package behind function_app.py (one concept per module)."""
