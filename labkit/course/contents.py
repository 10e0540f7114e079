"""The contents manager of ``labkit lab``: lessons open unmodified and save as they were built.

JupyterLab writes the running kernel's ``language_info`` into every notebook it opens, and
marks the notebook modified when that changes it; saving then writes it to the file. A lesson
built by ``labkit build`` carries the same ``language_info`` minus the Python version, which
differs from one learner's Python to the next. So this contents manager (JupyterLab's default
one otherwise) adds the version of the Python that serves the lesson, which is the kit's kernel's
too, when it opens a lesson, and removes it again when it saves one: an untouched lesson opens
unmodified, and saving it writes the file as it was built (``git status`` stays clean).

Only notebooks with ``labkit`` metadata (the lessons) are touched.

Example::

    jupyter lab --ServerApp.contents_manager_class=labkit.course.contents.LessonContentsManager
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

__all__ = ["PYTHON_VERSION", "LessonContentsManager", "with_version", "without_version"]

#: The Python version a kernel of this environment reports (as ipykernel computes it).
PYTHON_VERSION = sys.version.split()[0]


def _language_info(model: dict[str, Any]) -> dict[str, Any] | None:
    content = model.get("content")
    if model.get("type") != "notebook" or not isinstance(content, dict):
        return None
    metadata = content.get("metadata")
    if not isinstance(metadata, dict) or "labkit" not in metadata:
        return None
    info = metadata.get("language_info")
    return info if isinstance(info, dict) else None


def with_version(model: dict[str, Any]) -> None:
    """Add this Python's version to a lesson's ``language_info``, as the kernel will report it.

    Example::

        with_version({"type": "notebook", "content": nb})
    """
    info = _language_info(model)
    if info is not None and "version" not in info:
        info["version"] = PYTHON_VERSION


def without_version(model: dict[str, Any]) -> None:
    """Remove the Python version from a lesson's ``language_info``, as ``labkit build`` writes it.

    Example::

        without_version({"type": "notebook", "content": nb})
    """
    info = _language_info(model)
    if info is not None:
        info.pop("version", None)


class LessonContentsManager(AsyncLargeFileManager):
    """JupyterLab's default contents manager, with a lesson's Python version added on open and
    removed on save (see the module's docstring).

    Example::

        jupyter lab --ServerApp.contents_manager_class=labkit.course.contents.LessonContentsManager
    """

    async def get(
        self,
        path: Any,
        content: Any = True,
        type: Any = None,
        format: Any = None,
        require_hash: Any = False,
    ) -> Any:
        model = await super().get(  # type: ignore[no-untyped-call]
            path, content=content, type=type, format=format, require_hash=require_hash
        )
        if content and isinstance(model, dict):
            with_version(model)
        return model

    async def save(self, model: Any, path: Any = "") -> Any:
        if isinstance(model, dict):
            without_version(model)
        return await super().save(model, path)  # type: ignore[no-untyped-call]
