"""The playground's web layer: a FastAPI app over the ``library`` and Equinox.

``docs/architecture.md`` is the map: how a request flows, what may import what, and how to add
a module kind, a transform, an expression function or a setting. The packages:

- ``routers``: the HTTP layer, one router per area (parse, call a service, render or serialise);
- ``catalog``: every kind of module, one pydantic model per kind;
- ``runs``: ``grad``, ``vmap``, ``jit``... compiled once and run live (the engine in parts);
- ``training``: datasets, training jobs, the library's local rule, dynamics;
- ``pytree_ops``: flatten, partition, tree_map, edit and undo, compare, find;
- ``lessons``, ``rooms``: lessons as data files, and rooms a presenter leads through them.

The modules beside them: ``main`` (the app factory), ``services`` (the composition root and the
typed dependencies), ``settings``; the services the routers call: ``modules``, ``pages``,
``sharing``, ``retention``, ``reference`` (the library's reference page); storage:
``database``, ``store``; the request's way in: ``security``, ``serving``, ``workspaces``,
``errors``, ``compute`` (compute slots); and one home per utility: ``cache`` (the bounded
cache), ``text`` (shapes, dtypes, counts, bytes in words), ``templating`` (the one Jinja
environment), ``expressions`` (the safe expression language), ``trees``, ``plots``, ``forms``,
``formdata``, ``links``, ``sse``, ``devices``.
"""
