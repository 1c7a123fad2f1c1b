"""Reading a BMAD directory safely: regular files inside it only, each one that cannot be read a
problem of its own; `load_core` walks the directory."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from app.agents.personas import PersonaFileError, read_bmad_agent
from app.bmad.loader._core import (
    CONFIG_FILE,
    CORE_PARTS,
    DOC_KINDS,
    DOC_SUFFIXES,
    MAX_FILE_BYTES,
    BmadCore,
    BmadDoc,
    BmadFileError,
    Problem,
)
from app.bmad.loader._parse import cross_check, parse_config, parse_doc, parse_team, parse_workflow
from app.documents.templates import TemplateError, parse_template


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not readable (permission denied)"
    if exc.errno == errno.ENOENT:
        return "a broken link (its target does not exist)"
    return f"not readable ({exc.strerror or type(exc).__name__})"


def _read(root: Path, path: Path) -> str:
    """The text of a regular file inside `root`. Opened without blocking (a FIFO would wait for a
    writer forever) and checked on the open descriptor, so that nothing swapped in meanwhile counts."""
    try:
        resolved = path.resolve()
    except RuntimeError:  # Python before 3.13 reports a symlink loop so
        raise BmadFileError("a symlink loop") from None
    except OSError as exc:
        raise BmadFileError(_os_reason(exc)) from None
    if not resolved.is_relative_to(root):
        raise BmadFileError("it points outside the BMAD directory")
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise BmadFileError(_os_reason(exc)) from None
    try:
        with os.fdopen(descriptor, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BmadFileError("not a regular file (a FIFO, a device or a socket)")
            if info.st_size > MAX_FILE_BYTES:
                raise BmadFileError(f"larger than {MAX_FILE_BYTES} bytes")
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BmadFileError(_os_reason(exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise BmadFileError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BmadFileError("not UTF-8 text") from None


def _files(root: Path, folder: str, suffixes: tuple[str, ...], core: BmadCore) -> list[Path]:
    """The files of `folder` to load; any other entry in it is listed as unsupported."""
    directory = root / folder
    if not directory.is_dir():
        return []
    chosen: list[Path] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        core.problems.append(Problem(str(directory), _os_reason(exc)))
        return []
    for path in entries:
        if path.name.startswith("."):
            continue
        # Whatever is named like a file to load is read, and `_read` reports what it really is
        # (a FIFO, a symlink loop, an unreadable file) as a problem of that file.
        if path.suffix in suffixes and not path.is_dir():
            chosen.append(path)
        else:
            what = "a folder" if path.is_dir() else "a file"
            core.unsupported.append(
                Problem(str(path), f"{what} not read: {folder}/ holds {' or '.join(suffixes)} files")
            )
    return chosen


def load_core(directory: Path, into: BmadCore | None = None) -> BmadCore:
    """Everything loadable under `directory`; a later directory's files replace earlier ones by id."""
    core = into or BmadCore()
    try:
        root = directory.resolve()
    except (RuntimeError, OSError):
        core.problems.append(Problem(str(directory), "a symlink loop"))
        return core
    if not root.is_dir():
        core.problems.append(Problem(str(directory), "not a directory"))
        return core
    try:
        top = sorted(root.iterdir())
    except OSError as exc:
        core.problems.append(Problem(str(directory), _os_reason(exc)))
        return core
    for path in top:
        if path.name not in CORE_PARTS and not path.name.startswith("."):
            core.unsupported.append(Problem(str(path), "not read: not part of a BMAD core"))
    yaml_files = (".yaml", ".yml")
    for path in _files(root, "workflows", yaml_files, core):
        try:
            workflow = parse_workflow(_read(root, path), str(path))
            core.workflows[workflow.id] = workflow
            core.loaded.append(str(path))
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc)))
    for path in _files(root, "templates", yaml_files, core):
        try:
            template = parse_template(_read(root, path), str(path))
            core.templates[template.id] = template
            core.template_sources[template.id] = str(path)
            core.loaded.append(str(path))
        except (TemplateError, BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
    for path in _files(root, "agents", (".md",), core):
        try:
            agent = read_bmad_agent(_read(root, path), str(path), default_id=path.stem)
        except (PersonaFileError, BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        core.loaded.append(str(path))
        core.agents.pop(agent.id, None)
        core.other_agents.pop(agent.id, None)
        if agent.persona is None:
            core.other_agents[agent.id] = agent
            core.unsupported.append(Problem(str(path), f"{agent.unsupported}: loaded, not used"))
        else:
            core.agents[agent.id] = agent.persona
    for path in _files(root, "agent-teams", yaml_files, core):
        try:
            core.teams[path.stem] = parse_team(_read(root, path), str(path), path.stem)
            core.loaded.append(str(path))
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc)))
    for folder, kind in DOC_KINDS.items():
        docs: dict[str, BmadDoc] = getattr(core, folder)
        for path in _files(root, folder, DOC_SUFFIXES, core):
            try:
                docs[path.stem] = parse_doc(_read(root, path), str(path), path.stem, kind)
                core.loaded.append(str(path))
            except (BmadFileError, OSError) as exc:
                core.problems.append(Problem(str(path), str(exc)))
    config = root / CONFIG_FILE
    if config.is_symlink() or config.exists():
        try:
            core.config.update(parse_config(_read(root, config)))
            core.loaded.append(str(config))
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(config), str(exc)))
    cross_check(core)
    return core
