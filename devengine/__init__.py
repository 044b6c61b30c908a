"""devengine: a Dapr-compatible workflow engine for local runs and tests.

It serves the Dapr sidecar's `TaskHubSidecarService` gRPC protocol, persisted in SQLite, so real
Dapr SDK workers and clients connect to it unchanged.
"""
