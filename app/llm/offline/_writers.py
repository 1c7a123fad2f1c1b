"""One writer per artifact type: each reads the idea and the documents it was given.

A PRD keeps the features of the brief it was written from; the architecture has one component per
PRD feature; the implementation plan one task per component; the code one module per component (or
per component of the story it implements); epics come from the PRD's features, a story from its
epic, test cases from the story's acceptance criteria, and a review's findings are its checklist.
"""

from __future__ import annotations

from collections.abc import Callable

from app.llm.offline._code import agent_output, deployment_log, deployment_package, review, source_code, test_results
from app.llm.offline._job import Job, Produced
from app.llm.offline._plans import architecture, epics, implementation_plan, project_plan, specification, story

WRITERS: dict[str, Callable[[Job], Produced]] = {
    "software_specification": specification,
    "project_plan": project_plan,
    "system_architecture": architecture,
    "implementation_plan": implementation_plan,
    "source_code": source_code,
    "test_results": test_results,
    "deployment_package": deployment_package,
    "deployment_log": deployment_log,
    "agent_output": agent_output,
    "review": review,
    "epic": epics,
    "story": story,
}
