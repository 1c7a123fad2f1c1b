"""An artifact as the console shows it: the export's document for its stage, else its fields; safe HTML."""

from __future__ import annotations

from app.documents.html_page import markdown_fragment
from app.documents.readable import artifact_markdown

HOSTILE = "<script>alert(1)</script> [click](javascript:alert(1)) ![tracker](https://evil.example/t.png)"


def test_a_stage_artifact_reads_as_the_exports_document() -> None:
    content = {
        "overview": "A web app and an API.",
        "components": [{"name": "api", "responsibility": "serves tasks", "technology": "Python"}],
        "api_spec": [],
        "data_model": [],
        "risks": [],
    }
    markdown = artifact_markdown("system_architecture", "Architecture", content, "Team todo")
    assert "A web app and an API." in markdown
    assert "| api | serves tasks | Python |" in markdown
    assert '"overview"' not in markdown  # not JSON


def test_other_content_reads_field_by_field_and_code_as_code() -> None:
    partial = artifact_markdown("system_architecture", "Architecture", {"overview": 3, "components": [1]}, "P")
    assert "# Architecture" in partial and "## Overview" in partial  # not the template's shape: its fields
    review = artifact_markdown(
        "review", "PO checklist", {"passed": True, "items": [{"check": "scope", "ok": False}], "notes": None}, "P"
    )
    assert "## Passed\n\nyes" in review
    assert "- **Check**: scope" in review
    code = artifact_markdown(
        "source_code", "Code", {"files": [{"path": "app/main.py", "content": "print('```')"}], "language": "py"}, "P"
    )
    assert "## `app/main.py`\n\n````py\nprint('```')\n````" in code
    assert artifact_markdown("user_input", "Idea", {"text": "# My idea"}, "P") == "# My idea"


def test_the_html_is_safe_to_put_in_a_page() -> None:
    for content in ({"text": HOSTILE}, {"notes": HOSTILE, "more": [HOSTILE]}):
        html = markdown_fragment(artifact_markdown("review", "R", content, "P"))
        assert "<script" not in html and "&lt;script&gt;" in html  # raw HTML is text
        assert "<a " not in html  # a script link is no link
        assert "<img" not in html and "evil.example" not in html  # nothing is fetched from elsewhere
        assert "[image: tracker]" in html


def test_a_fragment_sits_under_the_pages_headings() -> None:
    html = markdown_fragment("# A\n\n##### B\n\n```py\n# not a heading\n```", heading_offset=2)
    assert html.startswith("<h3>A</h3>\n<h6>B</h6>\n")
    assert "# not a heading" in html
