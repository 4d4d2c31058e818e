"""Real in-process trioserve servers for integration tests.

The harness (fixtures, stub servers, fault injection) arrives in a later release; this package
is shipped now so that the distribution layout is stable.
"""

__all__: list[str] = []
