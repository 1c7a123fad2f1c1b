"""Render a BMAD template with content into Markdown (see `app.documents.html_page` for HTML).

The ``values`` contract
=======================

``values`` is a mapping. Its keys:

``values["sections"]``
    Maps a section id to that section's content (see below). Sections nested under a
    non-repeatable section are looked up in the same mapping, by their id (``"functional"``)
    or, where ids repeat, by their dotted path from the mapping's level
    (``"requirements.functional"``).
``values["conditions"]``
    Maps a section's ``condition`` text (``"PRD has UX/UI requirements"``) or its id
    (``"ui-goals"``) to ``True`` to render that section. A section with a ``condition`` is
    left out unless one of the two is exactly ``True``.
any other key
    A variable: ``{{project_name}}`` in the document title, a section title, ``template`` or
    ``item_template`` is replaced by ``values["project_name"]`` (text; numbers are written as
    they print). A variable nobody gives stays in the output as ``{{project_name}}``, visibly,
    and is listed by `missing_variables`.

A section's content, by the section's ``type``:

* ``paragraphs`` or no type (and any type not listed here): a string, or a list of strings
  (one paragraph each). The text is Markdown and is inserted as it is.
* ``bullet-list``: a list of strings, one ``- item`` each.
* ``numbered-list``: a list of strings, numbered ``1.``, ``2.``, ... (an item that starts with
  its own number, ``3: item`` as BMAD's ``{{criterion_number}}: {{criteria}}`` writes it, keeps
  that number: ``3. item``) or, when the section has a ``prefix``, written as ``- FR1: item``,
  ``- FR2: item`` (an item that already starts with ``FR<n>:`` is kept as it is).
* ``table``: a list of rows, each a list of cells (in the order of the section's
  ``columns``) or a mapping from column name to cell. The ``columns`` are the header row.
  A ``|`` inside a cell is escaped and a line break becomes a space.
* ``code`` / ``mermaid``: a string, put in a fenced block (language from the section's
  ``language`` key, or ``mermaid``).

In a list or table section, an item that is a mapping is written with the section's
``item_template`` (``"{{criterion_number}}: {{criteria}}"``), its keys being the variables.
``repeatable: true`` on a list or table section means "any number of items": the content is
still one list.

A mapping as a section's content is a *section object*:

* its keys other than ``content`` and ``sections`` are variables for this section's title and
  ``template`` and for everything below it (they override outer variables);
* ``content`` (optional) is the section's content as above; without it, the section's own
  ``template`` (``"As a {{user_type}}, I want {{action}}, ..."``) is filled with the variables,
  so ``{}`` fills a template from the variables already in scope;
* ``sections`` (optional) maps the ids of the section's children to their content; without
  it the children are looked up where the section itself was.

A ``repeatable: true`` section of any other type takes a list of section objects, one per
instance: each is rendered as its own copy of the section (title
``Epic {{epic_number}} {{epic_title}}`` filled from that object), and its children are looked up
only in that object's ``sections``, so every epic carries its own stories. A plain string as an
entry is taken as that instance's ``content``. When the title has no variables
(``"Critical Fullstack Rules"`` with ``template: "- **{{rule_name}}:** {{rule_description}}"``)
the heading is written once and the entries follow under it (one-line list items as one list).

The template's own text: a section's ``template``, or the static ``content`` text and table
``rows`` some v4 templates carry, is used when the values give the section a section object
without ``content`` (missing variables are then reported), or when the values say nothing about
the section and every variable in that text is known (so fixed text, with no variables, is
always shown). For ``code``/``mermaid`` sections the filled text is fenced.

Layout: the document title (``template.output.title``, else the template name) is ``#``,
top-level sections ``##``, their children ``###``, and so on down to ``######``. A section
with no content and no child with content is left out; a section without content of its own
keeps its heading when a child has content. ``instruction``, ``examples`` and ``elicit`` are
guidance for the agent and are never rendered.

Nothing is expanded twice: a ``{{x}}`` inside a value or inside content text stays as written.

`validate_values` lists what does not fit this contract, each problem as
``{"path": "sections.requirements.functional", "message": "..."}``; the path names sections
by id from the top, with ``[i]`` for the i-th instance of a repeatable section
(``sections.epic-details[0].story[1]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.documents.render._document import _Renderer
from app.documents.templates import Template

__all__ = ["missing_variables", "render_markdown", "validate_values"]


def render_markdown(template: Template, values: Mapping[str, Any]) -> str:
    """The document as Markdown, ending with one newline (see the module doc for ``values``)."""
    return _Renderer(template, values).render()


def missing_variables(template: Template, values: Mapping[str, Any]) -> list[str]:
    """Names of the ``{{variables}}`` left unfilled in the rendered document, in order, each once.

    Only what is rendered counts: a variable of an omitted section is not missing.
    """
    renderer = _Renderer(template, values)
    renderer.render()
    return list(renderer.missing)


def validate_values(template: Template, values: Mapping[str, Any]) -> list[dict[str, str]]:
    """Where ``values`` does not fit the template: ``[{"path": ..., "message": ...}, ...]``.

    Reported: missing variables, text where a list is expected and the other way round, table
    rows with the wrong number of cells or unknown columns, repeatable sections not given a
    list, section ids that the template does not have at that level, and condition entries
    that are not ``true``/``false`` or match no condition. An empty list means it fits.
    """
    renderer = _Renderer(template, values)
    renderer.render()
    return list(renderer.problems)
