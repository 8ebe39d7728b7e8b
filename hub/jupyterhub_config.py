"""JupyterHub configuration of the embedded hub (``geoportal up`` runs ``jupyterhub -f`` on it).

Everything comes from the platform settings (``GEOPORTAL_*`` environment, optional
``GEOPORTAL_CONFIG`` YAML); see :func:`geoportal_hub.config.configure_local`.
Add services with ``extra_services=[...]``.
"""

from geoportal.settings import load_settings
from geoportal_hub.config import configure_local

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub
configure_local(c, load_settings())
