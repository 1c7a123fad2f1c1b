"""Markdown into a standalone HTML page: what a document export opens in a browser."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = ["markdown_fragment", "markdown_to_html"]

_md = MarkdownIt("commonmark", {"html": False}).enable("table")


def _inline_images_only(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image is shown only when it is inline (`data:image/...`); any other is its alt text, so
    that opening an export never fetches anything from anywhere."""
    token = tokens[idx]
    if str(token.attrGet("src") or "").lower().startswith("data:image/"):
        return RendererHTML.image(self, tokens, idx, options, env)
    alt = self.renderInlineAsText(token.children or [], options, env)
    return f"[image: {html.escape(alt)}]"


_md.add_render_rule("image", _inline_images_only)

_CSS: Final = """
:root { color-scheme: light dark; }
body { margin: 0; padding: 2rem 1rem; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2328; background: #fff; }
main { max-width: 50rem; margin: 0 auto; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.6em 0 0.6em; }
h1 { font-size: 2em; border-bottom: 1px solid #d1d9e0; padding-bottom: 0.3em; margin-top: 0; }
h2 { font-size: 1.5em; border-bottom: 1px solid #d1d9e0; padding-bottom: 0.3em; }
h3 { font-size: 1.25em; }
h4, h5, h6 { font-size: 1em; }
p, ul, ol, table, pre, blockquote { margin: 0 0 1em; }
ul, ol { padding-left: 2em; }
table { border-collapse: collapse; display: block; overflow-x: auto; }
th, td { border: 1px solid #d1d9e0; padding: 0.35em 0.8em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
code { background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 6px; }
pre code { padding: 0; background: none; }
blockquote { border-left: 4px solid #d1d9e0; padding: 0 1em; color: #59636e; }
a { color: #0969da; }
@media (prefers-color-scheme: dark) {
  body { color: #e6edf3; background: #0d1117; }
  th, code, pre { background: #161b22; }
  th, td, h1, h2 { border-color: #3d444d; }
  a { color: #4493f8; }
}
""".strip()

# No scripts at all, styles only from the page itself; images only inline (data URIs).
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def markdown_fragment(markdown: str, *, heading_offset: int = 0) -> str:
    """``markdown`` as HTML to put inside a page of ours: the same safe rendering as a standalone page
    (raw HTML shown as text, no script links, only inline images), without the page around it; its
    headings `heading_offset` levels deeper (at most h6), under the page's own."""
    env: EnvType = {}
    tokens = _md.parse(markdown, env)
    if heading_offset:
        for token in tokens:
            if token.type in ("heading_open", "heading_close"):
                token.tag = f"h{min(int(token.tag[1:]) + heading_offset, 6)}"
    rendered: str = _md.renderer.render(tokens, _md.options, env)
    return rendered


def markdown_to_html(markdown: str, title: str) -> str:
    """A standalone HTML5 page for ``markdown``.

    Raw HTML in the Markdown is shown as text (markdown-it with ``html`` off), links with
    ``javascript:``/``vbscript:``/``file:`` (and non-image ``data:``) targets are not made into
    links (markdown-it's ``validateLink``), and a Content-Security-Policy forbids scripts anyway.
    """
    body = markdown_fragment(markdown)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{html.escape(title, quote=True)}</title>\n"
        f"<style>\n{_CSS}\n</style>\n"
        "</head>\n"
        "<body>\n"
        f"<main>\n{body}</main>\n"
        "</body>\n"
        "</html>\n"
    )
