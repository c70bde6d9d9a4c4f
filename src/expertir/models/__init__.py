"""Models: shared blocks (``blocks``), the backbone (``backbone``), one file per model.

Importing this package registers every model; build one with ``build_model(name, **options)``
(it records the resolved options as ``model.config``).
"""

from expertir.models.registry import build_model, list_models, register_model, resolve

# Each import registers its model(s).
from expertir.models import restormer  # noqa: F401,E402
from expertir.models import promptir  # noqa: F401,E402
from expertir.models import sler_ir  # noqa: F401,E402
from expertir.models import cea  # noqa: F401,E402

__all__ = ["build_model", "list_models", "register_model", "resolve"]
