"""Sandcastle's diffusion engines. Nothing in this package may import Qt.

Its layers, bottom to top (pyproject.toml has import-linter hold them): `api`, the contract;
`sources` and `folders`; `catalog` and `imaging`; `models` and `preview`; `sd`, the Stable
Diffusion step the SD engines share; the engines `inpaint`, `uncrop`, `edit`, `colorize` and
`diffae`, which never import each other; `registry` and `testing`; `services`, what the editor and
the command line need beyond the contract. The editor imports only `api`, `registry` and `services`.
"""
