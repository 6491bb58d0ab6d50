"""MkDocs hook: the help text Click prints verbatim becomes code blocks in the CLI reference.

mkdocs-click copies each command's help into the page as Markdown. The indented lines that Click
keeps as written (``\\b`` blocks: usage lines such as ``edgec ci [CONFIG] [--only MODEL/TARGET ...]``,
examples) would be reflowed there, and their bracket pairs read as reference links; this wraps
mkdocs-click's step so that each indented run of lines becomes a text block.
"""

from __future__ import annotations

from markdown import Extension
from markdown.preprocessors import Preprocessor


def fence_indented(lines: list[str]) -> list[str]:
    """Put each run of indented lines (outside code blocks) into a text code block."""
    out: list[str] = []
    block: list[str] = []
    fenced = False

    def flush() -> None:
        indent = min(len(x) - len(x.lstrip()) for x in block)
        out.extend(["", "```text", *(x[indent:] for x in block), "```", ""])
        block.clear()

    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.strip() and (line.startswith("  ") or (block and line.startswith(" "))):
            block.append(line)
            continue
        if block:
            flush()
        out.append(line)
    if block:
        flush()
    return out


class _AfterClick(Preprocessor):
    def __init__(self, md, inner):
        super().__init__(md)
        self.inner = inner

    def run(self, lines: list[str]) -> list[str]:
        expanded = self.inner.run(lines)
        return fence_indented(expanded) if expanded != lines else expanded


class _Extension(Extension):
    def extendMarkdown(self, md):  # noqa: N802  (Markdown's API)
        inner = md.preprocessors["mk_click"]
        md.preprocessors.deregister("mk_click")
        md.preprocessors.register(_AfterClick(md, inner), "mk_click", 141)


def on_config(config, **kwargs):
    config.markdown_extensions.append(_Extension())
    return config
