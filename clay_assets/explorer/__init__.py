"""`clay-assets explore`: a local web page over the vectors, read through a read-only role.

:mod:`.app` is the Starlette app (``create_app``), :mod:`.queries` what it asks the database
and the data root (``Explorer``), :mod:`.params` the checks of every request parameter, and
:mod:`.links` the URLs into the page that Dagster metadata carries (``explorer_url``).
The page and its map library (Leaflet 1.9.4, BSD-2-Clause, from the npm registry) are
package files under ``static/``: nothing is fetched from elsewhere at run time.
"""

from clay_assets.explorer.links import DEFAULT_HOST, DEFAULT_PORT, explorer_url

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "explorer_url"]
