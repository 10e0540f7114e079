"""The check plan: what each check cell asks, and the jobs that grade a submission against it.

This is the grader's trusted side of the exercise format (``docs/exercises.md``). A check cell
ends with one ``check(...)`` or ``check_test(...)`` call; :func:`parse_call` reads it from the
instructor's source (never from a submission) into a :class:`Call`: the check functions, or the
learner's test, the correct implementations and the mutants. ``labkit build`` stores the calls in
``instructor/manifest.json`` with the reference observations of the instructor's solution.

To grade a submission, :func:`make_plan` turns every call into **jobs**, one process each in the
sandbox: a ``check`` call is one job; a ``check_test`` call is one job per correct version and
per mutant, each running the learner's test against exactly one candidate. A job's spec is plain
data holding no label: the candidate's definition is cut from its cell with only what it needs
(:func:`closure`), every name the cell defines is renamed at random, the candidate's own
definition takes the correct implementation's name, and the job id is random. Which job is which
candidate is known only here, in :class:`Job`, on the grader's side.

Example::

    call = parse_call(cell_source, exercise="0.2", cell="ex2-check")
    plan = make_plan(submission_cells, lesson_cells, calls)
    for job in plan.jobs:
        print(job.exercise, job.role, job.spec["kind"])
"""

from __future__ import annotations

import ast
import functools
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, ParamSpec, TypeVar

from labkit.course.grading.wire import WireError, from_text, show, to_text

__all__ = [
    "AST_LOCK",
    "Call",
    "Candidate",
    "Cell",
    "CellKind",
    "CheckItem",
    "Job",
    "LessonCell",
    "Plan",
    "PlanError",
    "bound_names",
    "closure",
    "free_names",
    "make_plan",
    "one_at_a_time",
    "parse_call",
    "protected_names",
    "python_text",
    "rename",
    "segment",
    "split_call",
]

CellKind = Literal["learner", "locked", "check", "hidden"]
CALLS = ("check", "check_test")

#: Held around the grader's parsing: CPython 3.11.7's AST constructor keeps one recursion count
#: per interpreter, so two threads parsing at once can fail with "SystemError: AST constructor
#: recursion depth mismatch" (fixed in 3.11.8), and ``labkit grade --jobs`` plans in threads.
AST_LOCK = threading.RLock()

_P = ParamSpec("_P")
_R = TypeVar("_R")


def one_at_a_time(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` holding :data:`AST_LOCK` (it parses Python).

    Example::

        @one_at_a_time
        def names(source: str) -> set[str]:
            return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    """

    @functools.wraps(func)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with AST_LOCK:
            return func(*args, **kwargs)

    return locked


class PlanError(ValueError):
    """A check cell that the grader cannot plan; the message names the cell and the fix.

    Example::

        parse_call("print(1)", exercise="4.1", cell="ex1-check")   # raises PlanError
    """


@dataclass(frozen=True)
class Cell:
    """One code cell of a submission to run: its id, source, kind and exercise.

    ``kind`` is ``learner`` (run as the learner wrote it), ``locked`` (run as the instructor
    wrote it), ``check`` (a visible check cell) or ``hidden`` (a hidden check, instructor only).

    Example::

        Cell("ex1-solution", "async def sleep_all(delays): ...", "learner", exercise="0.1")
    """

    id: str
    source: str
    kind: CellKind
    exercise: str | None = None


@dataclass(frozen=True)
class CheckItem:
    """One check function of a ``check`` call: its name in the cell, its title, its reference.

    Example::

        CheckItem("three_sleeps_overlap", "sleep_all([1, 2, 3]) takes 3 seconds", reference=3)
    """

    expr: str
    title: str
    reference: Any = None


@dataclass(frozen=True)
class Candidate:
    """An implementation a learner's test runs against: a correct version or a mutant.

    ``label`` is the mutant's description (or the correct version's label); ``expr`` is its
    name in the instructor's cells.

    Example::

        Candidate("makes one attempt too few", "retry_gives_up_early")
    """

    label: str
    expr: str


@dataclass(frozen=True)
class Call:
    """One ``check``/``check_test`` call of a lesson: what it grades and how many points.

    Example::

        call = Call("0.1", "ex1-check", "check", False, 2.0, checks=(CheckItem("f", "f"),))
    """

    exercise: str
    cell: str
    kind: Literal["check", "test"]
    hidden: bool
    points: float
    checks: tuple[CheckItem, ...] = ()
    test: str = ""
    correct: tuple[Candidate, ...] = ()
    mutants: tuple[Candidate, ...] = ()
    loop_factory: str = ""
    time_limit: float | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The call as stored in ``instructor/manifest.json`` (references in wire text)."""
        data: dict[str, Any] = {
            "cell": self.cell,
            "kind": self.kind,
            "hidden": self.hidden,
            "points": self.points,
        }
        if self.kind == "check":
            data["checks"] = [
                {
                    "expr": c.expr,
                    "title": c.title,
                    "reference": to_text(c.reference),
                    "shows": show(c.reference),
                }
                for c in self.checks
            ]
        else:
            data["test"] = self.test
            data["correct"] = [{"label": c.label, "expr": c.expr} for c in self.correct]
            data["mutants"] = [{"label": c.label, "expr": c.expr} for c in self.mutants]
        if self.loop_factory:
            data["loop_factory"] = self.loop_factory
        if self.time_limit is not None:
            data["time_limit"] = self.time_limit
        return data

    @classmethod
    def from_manifest(cls, exercise: str, data: Any) -> Call:
        """A call read back from the manifest; raises PlanError if the entry is malformed."""
        try:
            kind = data["kind"]
            if kind not in ("check", "test"):
                raise PlanError(f"unknown kind {kind!r}")
            checks = tuple(
                CheckItem(str(c["expr"]), str(c["title"]), from_text(str(c["reference"])))
                for c in data.get("checks", ())
            )
            limit = data.get("time_limit")
            return cls(
                exercise=exercise,
                cell=str(data["cell"]),
                kind=kind,
                hidden=bool(data["hidden"]),
                points=float(data["points"]),
                checks=checks,
                test=str(data.get("test", "")),
                correct=tuple(_candidates(data.get("correct", ()))),
                mutants=tuple(_candidates(data.get("mutants", ()))),
                loop_factory=str(data.get("loop_factory", "")),
                time_limit=None if limit is None else float(limit),
            )
        except (KeyError, TypeError, ValueError, WireError) as exc:
            raise PlanError(f"exercise {exercise}: a malformed check entry ({exc})") from exc


def _candidates(raw: Iterable[Any]) -> Iterable[Candidate]:
    for item in raw:
        yield Candidate(str(item["label"]), str(item["expr"]))


# -- reading check cells ----------------------------------------------------------------------


def python_text(source: str) -> str:
    """A cell as plain Python for ``ast``: a leading cell-magic line and line magics blanked.

    Example::

        python_text("%%ipytest\\ndef test_x(): pass")   # "\\ndef test_x(): pass"
    """
    lines = source.split("\n")
    if lines and lines[0].startswith("%%"):
        lines[0] = ""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) and not line.lstrip().startswith("%=") else line
        for line in lines
    )


def segment(source: str, node: ast.stmt) -> str:
    """The text of a top-level statement as written (decorators included), from its cell.

    Example::

        source = "x = 1\n\n@dec\ndef f():\n    pass\n"
        segment(source, ast.parse(source).body[1])   # "@dec\ndef f():\n    pass"
    """
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    lines = source.split("\n")[first - 1 : node.end_lineno or node.lineno]
    return "\n".join(lines)


def split_call(source: str, where: str) -> tuple[list[ast.stmt], ast.Call, str]:
    """A check cell's statements before its final call, the call, and that prelude as text.

    Example::

        statements, call, prelude = split_call(cell_source, "lesson 0, cell ex1-check")
    """
    try:
        tree = ast.parse(python_text(source))
    except SyntaxError as exc:
        raise PlanError(f"{where}: does not parse ({exc.msg}, line {exc.lineno})") from None
    last = tree.body[-1] if tree.body else None
    if not (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Name)
        and last.value.func.id in CALLS
    ):
        raise PlanError(
            f"{where}: a check cell must end with one check(...) or check_test(...) call; "
            "move the call to the end of the cell"
        )
    lines = source.split("\n")
    prelude = "\n".join(lines[: last.lineno - 1]).rstrip() + "\n"
    return tree.body[:-1], last.value, prelude


def _literal(node: ast.expr, what: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PlanError(f"{where}: {what} must be a literal, got `{ast.unparse(node)}`") from None


def _name(node: ast.expr, what: str, where: str) -> str:
    if not isinstance(node, ast.Name):
        raise PlanError(
            f"{where}: {what} must be a name defined in the lesson, got `{ast.unparse(node)}`; "
            "give it a name with def or class, then pass that name"
        )
    return node.id


def _docstrings(statements: Sequence[ast.stmt]) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            found[node.name] = doc.strip().splitlines()[0] if doc else node.name.replace("_", " ")
    return found


@one_at_a_time
def parse_call(source: str, *, exercise: str, cell: str, where: str = "") -> Call:
    """The call a check cell ends with, read statically; points come later from the build.

    Example::

        call = parse_call('def f():\\n    return 1\\n\\ncheck("0.1", f)', exercise="0.1",
                          cell="ex1-check")
        assert call.kind == "check" and call.checks[0].expr == "f"
    """
    where = where or f"exercise {exercise}, cell {cell}"
    statements, node, _ = split_call(source, where)
    keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
    if any(k.arg is None for k in node.keywords) or any(
        isinstance(a, ast.Starred) for a in node.args
    ):
        raise PlanError(f"{where}: write the check call's arguments out (no * or ** arguments)")
    allowed = {"hidden", "points", "loop_factory", "time_limit", "record"}
    if node.func.id == "check_test":  # type: ignore[attr-defined]
        allowed |= {"correct", "mutants"}
    unknown = sorted(set(keywords) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown argument {unknown[0]}= in the check call")
    if not node.args:
        raise PlanError(f"{where}: the check call needs the exercise id first")
    said = _literal(node.args[0], "the exercise id", where)
    if said != exercise:
        raise PlanError(
            f"{where}: the check call is for exercise {said!r} but the cell is exercise "
            f"{exercise!r}; make them the same"
        )
    if "record" in keywords and _literal(keywords["record"], "record=", where) is False:
        raise PlanError(
            f"{where}: record=False is for demonstrations in ordinary cells, not check cells"
        )
    hidden = bool(_literal(keywords["hidden"], "hidden=", where)) if "hidden" in keywords else False
    points = _literal(keywords["points"], "points=", where) if "points" in keywords else None
    if points is not None and (not isinstance(points, (int, float)) or points < 0):
        raise PlanError(f"{where}: points= must be a number >= 0")
    limit = (
        _literal(keywords["time_limit"], "time_limit=", where) if "time_limit" in keywords else None
    )
    factory = ast.unparse(keywords["loop_factory"]) if "loop_factory" in keywords else ""
    base = Call(
        exercise=exercise,
        cell=cell,
        kind="check",
        hidden=hidden,
        points=float(points) if points is not None else -1.0,
        loop_factory=factory,
        time_limit=float(limit) if limit is not None else None,
    )
    if node.func.id == "check":  # type: ignore[attr-defined]
        if len(node.args) < 2:
            raise PlanError(f"{where}: check() needs at least one check function")
        titles = _docstrings(statements)
        names = [_name(arg, "each check", where) for arg in node.args[1:]]
        items = tuple(CheckItem(n, titles.get(n, n.replace("_", " "))) for n in names)
        return replace(base, checks=items)
    if len(node.args) != 2:
        raise PlanError(f"{where}: check_test() takes the exercise id and the learner's test")
    test = _name(node.args[1], "the learner's test", where)
    if "correct" not in keywords or "mutants" not in keywords:
        raise PlanError(f"{where}: check_test() needs correct= and mutants=")
    correct_node = keywords["correct"]
    if isinstance(correct_node, ast.Dict):
        correct = _mapping(correct_node, "correct=", where)
    else:
        correct = (Candidate("", _name(correct_node, "correct=", where)),)
    if not isinstance(keywords["mutants"], ast.Dict):
        raise PlanError(f"{where}: mutants= must be a dict literal of descriptions to names")
    mutants = _mapping(keywords["mutants"], "mutants=", where)
    if not mutants or not correct:
        raise PlanError(f"{where}: check_test() needs at least one correct version and mutant")
    return replace(base, kind="test", test=test, correct=correct, mutants=mutants)


def _mapping(node: ast.Dict, what: str, where: str) -> tuple[Candidate, ...]:
    found: list[Candidate] = []
    for key, value in zip(node.keys, node.values, strict=True):
        if key is None:
            raise PlanError(f"{where}: {what} must list its entries (no **)")
        label = _literal(key, f"each key of {what}", where)
        if not isinstance(label, str):
            raise PlanError(f"{where}: the keys of {what} must be strings")
        found.append(Candidate(label, _name(value, f"each value of {what}", where)))
    labels = [c.label for c in found]
    if len(set(labels)) != len(labels):
        raise PlanError(f"{where}: {what} names the same description twice")
    return tuple(found)


# -- names: what a statement binds and uses ---------------------------------------------------


def bound_names(statement: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds (not those inside functions).

    Example::

        bound_names(ast.parse("import a.b as c, d\\nx, y = 1, 2").body[0])   # {"c", "d"}
    """
    found: set[str] = set()

    def targets(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                targets(element)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def walk(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    found.add(alias.asname or alias.name.split(".")[0])
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                targets(target)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            targets(node.target)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.add(node.name)
        elif isinstance(node, ast.NamedExpr):
            targets(node.target)
        elif isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp)):
            return
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(statement)
    return found


def free_names(node: ast.AST) -> set[str]:
    """Every name a statement reads anywhere (an over-approximation of its global uses).

    Example::

        free_names(ast.parse("def f():\\n    return g(x)").body[0])   # {"g", "x"}
    """
    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
            found.add(child.id)
        elif isinstance(child, (ast.Global, ast.Nonlocal)):
            found.update(child.names)
    return found


def closure(pool: Sequence[ast.stmt], roots: Iterable[str]) -> list[ast.stmt]:
    """The statements of ``pool`` that define ``roots`` and what those need, in pool order.

    Example::

        pool = ast.parse("def a(): pass\\ndef b(): a()\\ndef c(): pass").body
        [s.name for s in closure(pool, ["b"])]   # ["a", "b"]
    """
    needed = set(roots)
    chosen: list[int] = []
    changed = True
    while changed:
        changed = False
        for index in range(len(pool) - 1, -1, -1):
            if index in chosen:
                continue
            if bound_names(pool[index]) & needed:
                chosen.append(index)
                needed |= free_names(pool[index])
                changed = True
    return [pool[index] for index in sorted(chosen)]


class _Renamer(ast.NodeTransformer):
    """Renames module-level names consistently, leaving local names of the same spelling alone."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping
        self.scopes: list[tuple[str, set[str]]] = []

    def _local(self, name: str) -> bool:
        for depth, (kind, names) in enumerate(reversed(self.scopes)):
            if kind == "class" and depth > 0:
                continue  # a class body's names are not visible in the functions inside it
            if name in names:
                return True
        return False

    def _new(self, name: str) -> str:
        return self.mapping.get(name, name) if not self._local(name) else name

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._new(node.id)
        return node

    def visit_Global(self, node: ast.Global) -> ast.Global:
        node.names = [self.mapping.get(n, n) for n in node.names]
        return node

    def _function(self, node: Any, params: ast.arguments) -> Any:
        if not isinstance(node, ast.Lambda):
            node.name = self._new(node.name)
            node.decorator_list = [self.visit(d) for d in node.decorator_list]
            if node.returns is not None:
                node.returns = self.visit(node.returns)
        for default in [*params.defaults, *params.kw_defaults]:
            if default is not None:
                self.visit(default)
        names = {a.arg for a in [*params.posonlyargs, *params.args, *params.kwonlyargs]}
        names |= {a.arg for a in (params.vararg, params.kwarg) if a is not None}
        body = node.body if isinstance(node.body, list) else [node.body]
        declared = {
            n
            for stmt in body
            for child in ast.walk(stmt)
            if isinstance(child, ast.Global)
            for n in child.names
        }
        for stmt in body:
            names |= _assigned(stmt)
        self.scopes.append(("function", names - declared))
        if isinstance(node, ast.Lambda):
            node.body = self.visit(node.body)
        else:
            node.body = [self.visit(stmt) for stmt in node.body]
        self.scopes.pop()
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        result: ast.FunctionDef = self._function(node, node.args)
        return result

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
        result: ast.AsyncFunctionDef = self._function(node, node.args)
        return result

    def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:
        result: ast.Lambda = self._function(node, node.args)
        return result

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        node.name = self._new(node.name)
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        node.keywords = [self.visit(k) for k in node.keywords]
        names: set[str] = set()
        for stmt in node.body:
            names |= _assigned(stmt)
        self.scopes.append(("class", names))
        node.body = [self.visit(stmt) for stmt in node.body]
        self.scopes.pop()
        return node

    def _comprehension(self, node: Any) -> Any:
        names: set[str] = set()
        for generator in node.generators:
            names |= bound_names(ast.Expr(generator.target)) | _targets(generator.target)
        first = node.generators[0]
        first.iter = self.visit(first.iter)  # evaluated in the enclosing scope
        self.scopes.append(("function", names))
        first.target = self.visit(first.target)
        first.ifs = [self.visit(i) for i in first.ifs]
        for generator in node.generators[1:]:
            self.visit(generator)
        for attribute in ("elt", "key", "value"):
            if hasattr(node, attribute):
                setattr(node, attribute, self.visit(getattr(node, attribute)))
        self.scopes.pop()
        return node

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension


def _targets(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _assigned(statement: ast.stmt) -> set[str]:
    """The names a statement binds in the scope it belongs to (nested scopes excluded)."""
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
            return
        if isinstance(
            node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
        ):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            found.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                found.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.add(node.name)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(statement)
    return found


def rename(statements: Sequence[ast.stmt], mapping: dict[str, str]) -> list[ast.stmt]:
    """Copies of ``statements`` with module-level names renamed by ``mapping``.

    A function's parameters and local variables keep their names even when they are spelled
    like a renamed global, so the code means what it meant.

    Example::

        [ast.unparse(s) for s in rename(ast.parse("def f(x): return g(x)").body, {"g": "h"})]
        # ["def f(x):\\n    return h(x)"]
    """
    renamer = _Renamer(mapping)
    out = []
    for statement in statements:
        copy = ast.parse(ast.unparse(statement)).body[0]
        out.append(renamer.visit(copy))
    return [ast.fix_missing_locations(s) for s in out]


# -- plans ------------------------------------------------------------------------------------


@dataclass
class Job:
    """One process the sandbox runs for a submission; the label lives here, not in ``spec``.

    ``role`` is ``check`` (a ``check`` call), ``correct`` or ``mutant`` (a ``check_test``
    candidate, ``index`` saying which). ``cells`` are the indices (into the plan's cell table)
    of the cells run before the job, in order.

    Example::

        job = plan.jobs[0]
        print(job.id, job.exercise, job.role, job.index)
    """

    id: str
    exercise: str
    call: int
    role: Literal["check", "correct", "mutant"]
    index: int
    cells: tuple[int, ...]
    spec: dict[str, Any]


@dataclass
class Plan:
    """What the sandbox runs for one submission: cells run once before forking, a cell table,
    and the jobs.

    ``prerun`` are the lesson's own cells before the first learner cell: the sandbox runs them
    once, before any learner code, and every job process starts from there. ``table`` holds the
    other cells (learner cells as written, locked cells as the instructor wrote them, earlier
    check cells without their final call). ``protected`` lists the names the lesson's own cells
    define that no solution cell does: candidates and checks see the lesson's objects under
    those names, whatever a learner cell rebinds.

    Example::

        plan = make_plan(submission.cells, lesson_cells, calls)
        print(len(plan.prerun), len(plan.table), len(plan.jobs))
    """

    prerun: list[dict[str, Any]]
    table: list[dict[str, Any]]
    jobs: list[Job]
    calls: dict[str, list[Call]]
    protected: set[str] = field(default_factory=set)
    positions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LessonCell:
    """One cell of an instructor notebook: id, type, role, exercise and the source as built.

    Example::

        LessonCell("ex-4-1-check", "code", "check", "4.1", 'check_test("4.1", ...)')
    """

    id: str
    cell_type: str
    role: str
    exercise: str | None
    source: str

    @property
    def locked(self) -> bool:
        """Whether learners must leave this cell as it is (everything but solutions)."""
        return self.role != "solution"


def _statements(source: str) -> list[ast.stmt]:
    try:
        return ast.parse(python_text(source)).body
    except SyntaxError:
        return []


@one_at_a_time
def protected_names(lesson_cells: Sequence[LessonCell]) -> set[str]:
    """The names the lesson's own cells bind and no solution cell does (see :class:`Plan`).

    Example::

        "retry" in protected_names(lesson.cells)   # True in lesson 0
    """
    mine: set[str] = set()
    theirs: set[str] = set()
    for cell in lesson_cells:
        if cell.cell_type != "code" or cell.role == "hidden":
            continue
        statements = _statements(cell.source)
        if cell.role == "check":
            statements = statements[:-1]
        names = set().union(*(bound_names(s) for s in statements)) if statements else set()
        (theirs if cell.role == "solution" else mine).update(names)
    return mine - theirs


def _entry(cell: Cell, source: str, kind: str, protected: set[str]) -> dict[str, Any]:
    binds: list[str] = []
    if kind != "learner":
        statements = _statements(source)
        binds = sorted(
            set().union(*(bound_names(s) for s in statements)) & protected if statements else set()
        )
    return {"id": cell.id, "source": source, "kind": kind, "protects": binds}


@one_at_a_time
def make_plan(
    cells: Sequence[Cell],
    lesson_cells: Sequence[LessonCell],
    calls: dict[str, list[Call]],
    *,
    skip: Iterable[str] = (),
) -> Plan:
    """The jobs that grade a submission: its cells in order, and every call of every exercise.

    ``cells`` is the submission's run order (learner, locked and check cells; see
    :mod:`~labkit.course.grading.submission`), ``lesson_cells`` the instructor notebook's cells,
    ``calls`` each exercise's calls from the manifest. Exercises in ``skip`` get no jobs.

    Example::

        plan = make_plan(submission.cells, lesson.cells, lesson.calls)
    """
    protected = protected_names(lesson_cells)
    rows: list[tuple[Cell, dict[str, Any]]] = []
    for cell in cells:
        if cell.kind == "check":
            try:
                _, _, prelude = split_call(cell.source, cell.id)
            except PlanError:
                prelude = ""
            rows.append((cell, _entry(cell, prelude, "locked", protected)))
        elif cell.kind in ("locked", "learner"):
            rows.append((cell, _entry(cell, cell.source, cell.kind, protected)))
    first_learner = next((i for i, (c, _) in enumerate(rows) if c.kind == "learner"), len(rows))
    prerun = [entry for _, entry in rows[:first_learner]]
    rest = rows[first_learner:]
    table = [entry for _, entry in rest]
    positions: dict[str, int] = {}
    for index, (cell, _) in enumerate(rows):
        if cell.kind == "check" and cell.exercise is not None:
            positions.setdefault(cell.exercise, index)
    skipped = set(skip)
    jobs: list[Job] = []
    for exercise, exercise_calls in calls.items():
        if exercise in skipped:
            continue
        where = positions.get(exercise, len(rows))
        last = max(
            [where - 1]
            + [i for i, (c, _) in enumerate(rows) if c.kind == "learner" and c.exercise == exercise]
        )
        before = tuple(
            i - first_learner
            for i in range(first_learner, last + 1)
            if i != where and not (rows[i][0].kind == "check" and rows[i][0].exercise == exercise)
        )
        pool_cells = [
            c
            for c in lesson_cells
            if c.cell_type == "code" and c.role in ("check", "hidden") and c.exercise == exercise
        ]
        for number, call in enumerate(exercise_calls):
            jobs.extend(_jobs(exercise, number, call, before, pool_cells, lesson_cells))
    return Plan(prerun, table, jobs, dict(calls), protected, positions)


def _pool(pool_cells: Sequence[Any], call: Call) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """Statements of this exercise's check cells before ``call``'s cell, and that cell's own.

    Each statement keeps its text as written (``_text``), so a check's hints quote its lines
    exactly as the notebook shows them.
    """
    earlier: list[ast.stmt] = []
    for cell in pool_cells:
        try:
            statements, _, _ = split_call(cell.source, cell.id)
        except PlanError:
            statements = []
        text = python_text(cell.source)
        for statement in statements:
            statement._text = segment(text, statement)  # type: ignore[attr-defined]
        if cell.id == call.cell:
            return earlier, statements
        earlier.extend(statements)
    return earlier, []


def _written(statement: ast.stmt) -> str:
    return str(getattr(statement, "_text", None) or ast.unparse(statement))


def _job_id() -> str:
    return secrets.token_hex(12)


def _random_name() -> str:
    return "_lk" + secrets.token_hex(6)


def _options(call: Call, mapping: dict[str, str] | None = None) -> dict[str, Any]:
    factory = call.loop_factory
    if factory and mapping:
        factory = ast.unparse(rename([ast.Expr(ast.parse(factory, mode="eval").body)], mapping)[0])
    return {"loop_factory": factory, "time_limit": call.time_limit}


def _jobs(
    exercise: str,
    number: int,
    call: Call,
    cells: tuple[int, ...],
    pool_cells: Sequence[Any],
    lesson_cells: Sequence[LessonCell],
) -> list[Job]:
    earlier, own = _pool(pool_cells, call)
    if call.kind == "check":
        roots = set().union(*(free_names(s) for s in own)) if own else set()
        roots |= {c.expr for c in call.checks}
        if call.loop_factory:
            roots |= free_names(ast.parse(call.loop_factory, mode="eval"))
        define = [_written(s) for s in closure(earlier, roots)]
        define += [_written(s) for s in own]
        spec = {
            "kind": "check",
            "define": define,
            "checks": [c.expr for c in call.checks],
            **_options(call),
        }
        return [Job(_job_id(), exercise, number, "check", 0, cells, spec)]
    canonical = call.correct[0].expr
    docs = _docstrings_of(canonical, [*earlier, *own], lesson_cells)
    jobs = []
    for role, candidates in (("correct", call.correct), ("mutant", call.mutants)):
        for index, candidate in enumerate(candidates):
            spec = _test_spec(call, candidate.expr, canonical, docs, [*earlier, *own], lesson_cells)
            jobs.append(Job(_job_id(), exercise, number, role, index, cells, spec))  # type: ignore[arg-type]
    return jobs


def _docstrings_of(
    name: str, pool: Sequence[ast.stmt], lesson_cells: Sequence[LessonCell]
) -> dict[str, str | None]:
    """The docstrings of the correct implementation, and of its methods if it is a class.

    Every candidate gets these, so a mutant's own docstring ("Buggy: ...") never shows.
    """
    for statement in reversed([*_lesson_statements(lesson_cells), *pool]):
        if (
            isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and statement.name == name
        ):
            docs: dict[str, str | None] = {"": ast.get_docstring(statement, clean=False)}
            if isinstance(statement, ast.ClassDef):
                for node in statement.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        docs[node.name] = ast.get_docstring(node, clean=False)
            return docs
    return {"": None}


def _undocumented(statement: ast.stmt) -> ast.stmt:
    """A statement with the docstrings of its functions and classes removed."""
    for node in ast.walk(statement):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return statement


def _lesson_statements(lesson_cells: Sequence[LessonCell]) -> list[ast.stmt]:
    found: list[ast.stmt] = []
    for cell in lesson_cells:
        if cell.cell_type == "code" and cell.role not in ("check", "hidden", "solution"):
            found.extend(_statements(cell.source))
    return found


def _test_spec(
    call: Call,
    expr: str,
    canonical: str,
    docs: dict[str, str | None],
    pool: Sequence[ast.stmt],
    lesson_cells: Sequence[LessonCell],
) -> dict[str, Any]:
    roots = {expr, call.test}
    if call.loop_factory:
        roots |= free_names(ast.parse(call.loop_factory, mode="eval"))
    chosen = closure(pool, roots)
    defined = set().union(*(bound_names(s) for s in chosen)) if chosen else set()
    if expr not in defined and expr != canonical:
        # A mutant from the lesson's own cells (a worked example): its definition is taken from
        # the instructor's source and run again under the canonical name, so no cell's name for
        # it reaches the sandbox. Its free names are the lesson's objects, already defined.
        own = [
            s
            for s in _lesson_statements(lesson_cells)
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and s.name == expr
        ]
        if own:
            chosen = [*chosen, own[-1]]
            defined.add(expr)
    imported = (
        set().union(
            *(bound_names(s) for s in chosen if isinstance(s, (ast.Import, ast.ImportFrom)))
        )
        if chosen
        else set()
    )
    mapping = {name: _random_name() for name in defined - imported}
    alias = ""
    if expr in defined:
        # Every reference to the candidate goes through an alias bound to it once it exists;
        # only its own def/class statement takes the canonical name.
        alias = mapping[expr]
        pick = max(i for i, s in enumerate(chosen) if expr in bound_names(s))
        renamed = rename(chosen, mapping)
        target = renamed[pick]
        if isinstance(target, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            target.name = canonical
        else:
            renamed.insert(pick + 1, ast.parse(f"{canonical} = {alias}").body[0])
            pick += 1
        define = [ast.unparse(_undocumented(s)) for s in renamed]
    else:
        define = [ast.unparse(_undocumented(s)) for s in rename(chosen, mapping)]
        define.append(f"{canonical} = {expr}")
        pick = len(define) - 1
    test = mapping.get(call.test, call.test)
    return {
        "kind": "test",
        "define": define,
        "pick": pick,
        "name": canonical,
        "alias": alias,
        "docs": docs,
        "test": test,
        **_options(call, mapping),
    }
