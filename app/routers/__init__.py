"""The HTTP layer: one router per area; each parses, calls a service, renders or serialises.

Addresses follow one scheme:

- ``/api/...``: the JSON API (documented in OpenAPI at ``/docs``);
- ``/``, ``/m/{module_id}``, ``/s/{share_id}``: full HTML pages;
- ``/m/{module_id}/<area>``: the HTML fragments (htmx) of a module's page: ``tree``, ``leaf``,
  ``values``, ``run``, ``sweep``, ``train-panel``, ``train``, ``jobs/{job_id}/progress``,
  ``dynamics-panel``, ``dynamics``, ``datasets/csv``, ...; ``/build...`` for the build form.

Routers import services (``app.services``, ``app.modules``, ``app.pages``, ``app.runs``,
``app.training``, ...) and the one Jinja environment (``app.templating``); nothing outside this
package and ``app.main`` imports a router (``tests/test_architecture.py`` checks it).

The routers: ``modules`` (the catalog, building, trees and leaves: JSON), ``pages`` (the
pages and the module page's fragments), ``runs``, ``training`` (jobs, datasets, dynamics and
their panels), ``pytree_ops``, ``sharing``, ``lessons``, ``rooms``, ``workspace`` (your
workspace, deleting it), ``reference`` (``/library``), ``api_docs`` (``/docs``) and
``health``. ``docs/architecture.md`` maps the whole of ``app/``.
"""
