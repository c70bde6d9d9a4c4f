"""The browser demo behind ``expertir serve``.

* :mod:`.restorer`: what one request does (read the upload with the hardened reader,
  restore within the memory budget, explain, write the PNG), with no web code in it;
* :mod:`.app`: the Gradio page around it and :func:`launch` (needs the ``demo`` extra:
  ``pip install 'expertir[demo]'``).
"""

from expertir.serve.restorer import DEFAULT_MAX_PIXELS, Restoration, Restorer

__all__ = ["DEFAULT_MAX_PIXELS", "Restoration", "Restorer"]
