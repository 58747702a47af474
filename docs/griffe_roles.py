"""A Griffe extension for the docs site: docstrings use Sphinx cross-reference roles
(``:func:`~jacopt.jacobian```), which ``help()`` and Sphinx read but mkdocstrings shows as text.
This rewrites each role into inline code (``jacobian``; with ``~`` the last component only, as
Sphinx does) when the site is built; the sources keep their roles."""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`(~?)\.?([^`]+)`")


def rewrite(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code."""
    def code(match: re.Match) -> str:
        short, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
