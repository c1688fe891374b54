"""`geocatalog-ingest`: the operator command line (dev and ops only, never deployed).

A thin client over `shared/`: it reads the status table and the item index, and sends job messages,
through the same modules the app uses. `shared/` and `function_app.py` never import it.
"""
