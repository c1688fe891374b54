"""`python -m cli` is `geocatalog-ingest`."""

from cli.main import main

main()
