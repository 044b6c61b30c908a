"""Sample workloads for the devengine: a furniture shop's workflows and the load that drives them.

``python -m devengine.samples --engine HOST:PORT [--rate N]`` runs, in one process, a worker app
built on the Dapr Python SDK (``workflows``: orders, fulfilment, invoices, payments, shipments,
subscriptions and a payment-gateway monitor) and a load generator (``generator``) that starts
workflows and acts on them the way managers, customers and support staff would. Within a minute
at the default rate the engine holds instances in every status a console shows: running,
completed, failed, terminated and suspended.

It talks to the engine only through the SDK, so it runs against a real Dapr sidecar as well.
"""
