"""The console's only path to workflow engines (Dapr sidecars or devengine).

- ``config``: the ``CONSOLE_ENGINES`` setting, parsed (no gRPC imports).
- ``types``: plain dataclasses handed to the rest of the console.
- ``errors``: the few exceptions engine calls raise.
- ``client``: ``EngineClient``, the one module importing the generated stubs.
- ``indexer``: engine -> console database, in small units of work.
"""

import os

# gRPC's core writes lines of its own to stderr, outside the console's log and its limits on
# repeated lines: a TLS handshake that fails (TLS set for an engine that has none, or the
# reverse) was one line every few seconds for as long as it lasted. What the console needs of
# a failed call is in the call's error, which the indexer logs and shows. Set before gRPC is
# first imported (it reads it then); an operator's own setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
