"""A mkdocs hook: the repository files outside docs/ that the guides link to join the site.

The guides link such files by their path in the repository (docs/README.md links the example
notebook as ``../examples/quickstart.ipynb``), which works on GitHub and in a checkout. mkdocs
knows only the files under docs/ and a strict build fails on any other link, so this hook
copies each file below into the site at its repository path (``site/examples/...``) and
points the links that reach it there.
"""

from __future__ import annotations

import os
from typing import Any

from mkdocs.structure.files import File, Files

FILES = ("examples/quickstart.ipynb",)


def on_files(files: Files, *, config: Any) -> Files:
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    for path in FILES:
        files.append(File.generated(config, path, abs_src_path=os.path.join(root, path)))
    return files


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    depth = page.file.src_uri.count("/")
    for path in FILES:
        markdown = markdown.replace(f"]({'../' * (depth + 1)}{path}", f"]({'../' * depth}{path}")
    return markdown
