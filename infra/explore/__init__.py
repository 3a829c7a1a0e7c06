"""The explorer: a local web app over tag runs (server, queries, labels, static page)."""
