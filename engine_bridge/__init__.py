"""The console's only path to workflow engines (Dapr sidecars or devengine).

- ``config``: the ``CONSOLE_ENGINES`` setting, parsed (no gRPC imports).
- ``types``: plain dataclasses handed to the rest of the console.
- ``errors``: the few exceptions engine calls raise.
- ``client``: ``EngineClient``, the one module importing the generated stubs.
- ``indexer``: engine -> console database, in small units of work.
"""
