"""bullfast's benchmark harness (``bullfast bench``, ``python -m benchmarks``) and the older
single-purpose scripts (``flow_add.py``, ``map_reduce.py``, ``fan_out.py``, ``soak.py``).

Not part of the installed package: it lives in the checkout, next to ``src/``.
"""
