"""A griffe extension for the API reference: mindserve's Sphinx-style docstrings as Markdown.

mindserve's docstrings use Sphinx roles (``:class:`Runtime```, ``:meth:`infer```), reST
literal blocks (a paragraph ending in ``::``) and ``#:`` comments documenting attributes.
mkdocstrings renders Markdown and reads only docstrings, so this extension

* rewrites each role as a cross-reference to the object it names, resolved in the
  docstring's scope the way Sphinx would (``close`` in a ``Runtime`` docstring is
  ``Runtime.close``). A reference to an object the reference does not document (a private
  helper) stays plain code: the references are *optional* autorefs, which render as code
  when they resolve nowhere, where a strict build would fail on a plain Markdown reference;
* ends each literal block's paragraph with ``:`` instead of ``::``;
* makes the ``#:`` comment lines just above an attribute its docstring.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj):`(?P<target>[^`]+)`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.M)


def _identifier(obj: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names in the scope of ``obj``, or None."""
    first, _, rest = target.partition(".")
    try:
        path = obj.resolve(first)
    except (griffe.NameResolutionError, griffe.AliasResolutionError):
        return target if first == "mindserve" else None
    return f"{path}.{rest}" if rest else path


def _rewrite(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match) -> str:
        target = match["target"].lstrip("!")
        shown = target.lstrip("~.")
        title = shown.rsplit(".", 1)[-1] if target.startswith("~") else shown
        code = f"<code>{html.escape(title)}</code>"
        identifier = _identifier(obj, shown)
        if identifier is None:
            return code
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    return LITERAL_BLOCK.sub(":", ROLE.sub(link, text))


def _comment_docstring(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines just above an attribute, as text, or None."""
    if not obj.is_attribute or obj.lineno is None:
        return None
    lines = obj.module.lines
    comment: list[str] = []
    index = obj.lineno - 2  # the line above, 0-based
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return "\n".join(comment) or None


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        self._visit(pkg, seen)

    def _visit(self, obj: griffe.Object, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if obj.docstring is None and (comment := _comment_docstring(obj)):
            obj.docstring = griffe.Docstring(comment, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = _rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, seen)
