"""The merge: many layer tars in, one squashed layer tar out (docs/merge-rules.md).

`merger` drives it in Python; the per-member work is compiled (Cython): `tarheader` the
strict header reader and canonical writer, `pathtable` the interned paths and what the
layers decided about them, `layerindex` the streaming indexer and its spool, `layerpass`
one layer's rules and the hard links, `ordered` the ordered output. The `.pyi` stubs
beside them type them for mypy.
"""
