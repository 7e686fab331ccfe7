"""Model roles and their backends.

Each role is a small abstract interface in its own sub-package (``llm``, ``captioner``,
``text_embedder``, ``image_embedder``, ``renderer``). A backend is one module in that sub-package that
registers itself by name with the role's registry; configs choose backends by that name
(``{"backend": "hf", "model": "org/name", ...}``) or by an import path (``"mypkg.mod:MyClass"``) for a
backend that lives outside spti. Backend modules import torch & co. only inside functions, so discovering
them is cheap.
"""
