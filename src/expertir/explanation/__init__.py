"""Explanations: what a model thinks the degradation is, and where it routes.

* :mod:`.image`: :func:`explain` one image -> :class:`Explanation` (restored output, change
  map, blind degradation estimate, SLER-IR routing maps or CEA affinity maps);
* :mod:`.probe`: the linear degradation probe for models without prototypes (CEA);
* :mod:`.sphere`: a benchmark's embeddings on SLER-IR's sphere, blind classification
  accuracy, alignment and uniformity;
* :mod:`.figures`: the PNG figures of all three.

``expertir explain`` (``expertir/cli/explain.py``) is the command line over these.
"""

from expertir.explanation.image import DegradationEstimate, Explanation, explain, write_json
from expertir.explanation.sphere import SphereReport, embed_benchmark

__all__ = ["DegradationEstimate", "Explanation", "SphereReport", "embed_benchmark", "explain",
           "write_json"]
