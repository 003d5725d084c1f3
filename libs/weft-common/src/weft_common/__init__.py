"""Shared building blocks of the Weft services: settings, errors, the workflow model, the compiled
DAG, references, JSON and the gRPC bootstrap."""
