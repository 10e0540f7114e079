"""The tamper scan: learner cells that reach into the grading machinery are flagged, statically.

The sandbox decides nothing, but learner code inside it has full power over its own process: it
could read the job's definitions to tell which candidate it got, or write a forged reply. Those
routes all need introspection or raw system access that honest exercise code never uses, so the
grader reads every learner cell's source (never runs it) and flags:

* walking the interpreter: ``gc``, frames and tracebacks (``sys._getframe``, ``f_locals``,
  ``f_back``, ``tb_frame``...), code objects and function internals (``__code__``,
  ``__closure__``, ``__globals__``), class internals (``__dict__``, ``__mro__``, ``mro()``,
  ``__subclasses__``, ``__bases__``), ``inspect``, ``dis``, ``ctypes``, ``marshal``,
  ``importlib``, ``builtins``, ``traceback``, ``linecache``;
* dynamic access that hides what it touches: ``eval``, ``exec``, ``compile``, ``__import__``,
  ``globals()``, ``locals()``, ``vars()``, ``getattr``/``setattr``/``delattr`` with a computed
  name, a string spelling a flagged attribute;
* the process and its surroundings: ``sys.modules`` and import hooks, raw file descriptors
  (``os.write``, ``os.read``, ``os.dup2``, ``os.fdopen``...), ``/proc``, ``/sys`` and
  ``/dev/fd`` paths, the environment (``os.environ``, ``os.getenv``), signals and processes
  (``signal``, ``os.kill``, ``os.fork``, ``subprocess``), ``get_ipython()`` and shell escapes
  (``!cmd``, ``%env``, cell magics other than ``%%ipytest``);
* patching: assigning to an attribute of an imported module (``json.loads = ...``), or changing
  the lesson's own objects (``Heartbeat.start = ...``, ``setattr(retry, ...)``);
* forgery: an ``__eq__`` that answers ``True`` to anything (such an object is not plain data and
  never crosses to the grader, but defining one says what the cell is for).

A finding names the cell, the line and what was seen; the grader gives the exercises that the
cell can affect no points and marks the submission as tampered. The scan is a tripwire, not the
boundary: the boundary is the process split (:mod:`~labkit.course.grading.sandbox`).

Example::

    findings = scan_cell("import gc\\nfor o in gc.get_objects(): pass", cell="ex1-solution")
    print(findings[0])   # "line 1: imports gc (walks the interpreter's objects)"
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Finding", "scan_cell"]

MODULES = {
    "gc": "walks the interpreter's objects",
    "inspect": "inspects frames and code",
    "dis": "inspects code objects",
    "ctypes": "writes raw memory",
    "_ctypes": "writes raw memory",
    "cffi": "writes raw memory",
    "marshal": "reads code objects",
    "importlib": "imports modules by computed names",
    "imp": "imports modules by computed names",
    "builtins": "patches Python's builtins",
    "traceback": "reads frames of other code",
    "linecache": "reads the source of other code",
    "signal": "handles signals",
    "subprocess": "starts processes",
    "multiprocessing": "starts processes",
    "pty": "starts processes",
    "fcntl": "works on raw file descriptors",
    "mmap": "maps raw memory",
    "resource": "changes the process's limits",
    "IPython": "reaches into the notebook shell",
    "ipytest": "reaches into the notebook's test runner",
    "ipykernel": "reaches into the kernel",
    "_pytest": "reaches into pytest's internals",
    "labkit.course": "reaches into the grading machinery",
}
# from labkit.course import check, check_test, setup: the lesson's own setup line.
COURSE_NAMES = {"check", "check_test", "setup", "CheckResult"}

ATTRIBUTES = {
    "__code__": "reads a function's code",
    "__closure__": "reads a function's closure",
    "__globals__": "reads a function's globals",
    "__dict__": "reads an object's internals",
    "__mro__": "reads a class's ancestry",
    "mro": "reads a class's ancestry",
    "__bases__": "reads a class's ancestry",
    "__base__": "reads a class's ancestry",
    "__subclasses__": "walks classes",
    "__func__": "unwraps a method",
    "__self__": "unwraps a method",
    "__wrapped__": "unwraps a function",
    "__defaults__": "reads a function's internals",
    "__kwdefaults__": "reads a function's internals",
    "__builtins__": "reaches Python's builtins",
    "__getattribute__": "reads attributes behind the scenes",
    "__setattr__": "writes attributes behind the scenes",
    "__delattr__": "deletes attributes behind the scenes",
    "__reduce__": "reads an object's internals",
    "__reduce_ex__": "reads an object's internals",
    "__loader__": "reaches the import system",
    "__spec__": "reaches the import system",
    "__traceback__": "reads a traceback's frames",
    "__import__": "imports by computed name",
    "f_locals": "reads a frame",
    "f_globals": "reads a frame",
    "f_back": "walks the call stack",
    "f_code": "reads a frame",
    "f_builtins": "reads a frame",
    "tb_frame": "reads a traceback's frames",
    "tb_next": "walks a traceback",
    "gi_frame": "reads a generator's frame",
    "gi_code": "reads a generator's code",
    "cr_frame": "reads a coroutine's frame",
    "cr_code": "reads a coroutine's code",
    "ag_frame": "reads a generator's frame",
    "ag_code": "reads a generator's code",
    "co_code": "reads bytecode",
    "co_consts": "reads code objects",
    "co_names": "reads code objects",
    "co_name": "reads code objects",
    "co_qualname": "reads code objects",
    "co_filename": "reads code objects",
    "co_firstlineno": "reads code objects",
}
SYS = {
    "modules": "changes or reads sys.modules",
    "_getframe": "walks the call stack",
    "_current_frames": "reads other threads' frames",
    "settrace": "traces other code",
    "setprofile": "traces other code",
    "addaudithook": "hooks the interpreter",
    "meta_path": "hooks the import system",
    "path_hooks": "hooks the import system",
    "path_importer_cache": "hooks the import system",
    "exc_info": "reads tracebacks",
    "exception": "reads tracebacks",
    "monitoring": "traces other code",
    "displayhook": "hooks the interpreter",
    "excepthook": "hooks the interpreter",
}
OS = (
    {
        name: "works on raw file descriptors"
        for name in (
            "write",
            "read",
            "open",
            "fdopen",
            "dup",
            "dup2",
            "pipe",
            "pipe2",
            "lseek",
            "sendfile",
            "memfd_create",
            "pidfd_open",
            "set_blocking",
            "close",
            "closerange",
            "readv",
            "writev",
            "pread",
            "pwrite",
        )
    }
    | {
        name: "reads or changes the environment"
        for name in ("environ", "environb", "getenv", "getenvb", "putenv", "unsetenv")
    }
    | {
        name: "signals or starts processes"
        for name in (
            "kill",
            "killpg",
            "fork",
            "forkpty",
            "setsid",
            "setpgid",
            "getppid",
            "system",
            "popen",
            "execv",
            "execve",
            "execl",
            "execle",
            "execlp",
            "execlpe",
            "execvp",
            "execvpe",
            "spawnv",
            "spawnve",
            "spawnl",
            "spawnle",
            "posix_spawn",
            "posix_spawnp",
            "register_at_fork",
            "waitpid",
            "wait",
            "wait3",
            "wait4",
            "waitid",
        )
    }
)
THREADING = {
    "enumerate": "reaches other threads",
    "_active": "reaches other threads",
    "settrace": "traces other code",
    "setprofile": "traces other code",
    "settrace_all_threads": "traces other code",
    "setprofile_all_threads": "traces other code",
}
MODULE_ATTRIBUTES = {"sys": SYS, "os": OS, "posix": OS, "threading": THREADING}
NAMES = {
    "eval": "runs code built at run time",
    "exec": "runs code built at run time",
    "compile": "builds code at run time",
    "globals": "reads the namespace behind the scenes",
    "locals": "reads the namespace behind the scenes",
    "vars": "reads an object's internals",
    "breakpoint": "starts a debugger",
    "__import__": "imports by computed name",
    "__builtins__": "reaches Python's builtins",
    "get_ipython": "reaches into the notebook shell",
}
DYNAMIC = {"getattr", "setattr", "delattr"}
LINE_MAGICS = {"time", "timeit", "matplotlib"}
CELL_MAGICS = {"ipytest", "time", "timeit", "capture"}
PATHS = ("/proc", "/sys/", "/dev/fd", "/dev/mem", "/dev/kmem")


@dataclass(frozen=True)
class Finding:
    """One thing the scan saw: the cell, the line, and what it does.

    Example::

        str(Finding("ex1-solution", 3, "imports gc (walks the interpreter's objects)"))
        # "line 3: imports gc (walks the interpreter's objects)"
    """

    cell: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def _module_rule(name: str) -> str | None:
    for module, why in MODULES.items():
        if name == module or name.startswith(module + "."):
            return f"imports {name} ({why})"
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, cell: str, protected: set[str], offset: int) -> None:
        self.cell = cell
        self.protected = protected
        self.offset = offset
        self.modules: dict[str, str] = {}
        self.findings: list[Finding] = []
        self.allowed: set[int] = set()

    def flag(self, node: ast.AST, what: str) -> None:
        line = getattr(node, "lineno", 1) + self.offset
        self.findings.append(Finding(self.cell, line, what))

    # imports

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            rule = _module_rule(alias.name)
            if rule:
                self.flag(node, rule)
            self.modules[alias.asname or alias.name.split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0]
            )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module == "labkit.course" and all(a.name in COURSE_NAMES for a in node.names):
            return
        rule = _module_rule(module)
        if rule:
            self.flag(node, rule)
        rules = MODULE_ATTRIBUTES.get(module, {})
        for alias in node.names:
            full = f"{module}.{alias.name}"
            sub = _module_rule(full)
            if sub and not rule:
                self.flag(node, sub)
            if alias.name in rules:
                self.flag(node, f"imports {full} ({rules[alias.name]})")
            if alias.name in NAMES or alias.name in DYNAMIC:
                self.flag(node, f"imports {alias.name} from {module}")
            self.modules.setdefault(alias.asname or alias.name, full)

    # attributes

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in ATTRIBUTES:
            self.flag(node, f"uses .{node.attr} ({ATTRIBUTES[node.attr]})")
        root = _root(node)
        if root is not None and isinstance(node.value, ast.Name):
            module = self.modules.get(root, root if root in MODULE_ATTRIBUTES else "")
            rules = MODULE_ATTRIBUTES.get(module.split(".")[0], {})
            if node.attr in rules and module.split(".")[0] == module:
                self.flag(node, f"uses {module}.{node.attr} ({rules[node.attr]})")
        if node.attr == "__class__" and isinstance(node.ctx, ast.Store):
            self.flag(node, "changes an object's class")
        self.generic_visit(node)

    def _target(self, target: ast.expr, verb: str) -> None:
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            root = _root(target)
            if _called(target):
                self.flag(target, f"{verb} {ast.unparse(target)} (patches a class at run time)")
            elif root in self.modules or root in MODULE_ATTRIBUTES:
                self.flag(target, f"{verb} {ast.unparse(target)} (patches a module)")
            elif root in self.protected:
                self.flag(target, f"{verb} {ast.unparse(target)} (changes the lesson's {root})")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._target(element, verb)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._target(target, "assigns")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target, "assigns")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node.target, "assigns")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._target(target, "deletes")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        body = [
            s
            for s in node.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        ]
        if (
            node.name in ("__eq__", "__ne__")
            and len(body) == 1
            and isinstance(body[0], ast.Return)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, bool)
        ):
            self.flag(node, f"defines {node.name} that answers {body[0].value.value} to anything")
        self.generic_visit(node)

    # names and calls

    def visit_Name(self, node: ast.Name) -> None:
        if id(node) in self.allowed:
            return
        if node.id in NAMES:
            self.flag(node, f"uses {node.id} ({NAMES[node.id]})")
        elif node.id in DYNAMIC:
            self.flag(node, f"uses {node.id} as a value (hides which attribute it touches)")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in DYNAMIC:
            self.allowed.add(id(func))
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self.flag(node, f"calls {func.id} with a computed attribute name")
            elif name.value in ATTRIBUTES:
                self.flag(node, f"calls {func.id}(..., {name.value!r}) ({ATTRIBUTES[name.value]})")
            target = node.args[0] if node.args else None
            if target is not None and func.id != "getattr":
                root = _root(target)
                if root in self.protected or root in self.modules or _called(target):
                    self.flag(node, f"calls {func.id} on {ast.unparse(target)} (patches objects)")
        elif (isinstance(func, ast.Name) and func.id == "open") or (
            isinstance(func, ast.Attribute)
            and func.attr in ("open", "FileIO")
            and _root(func) in ("io", "_io")
        ):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, int):
                self.flag(node, "opens a raw file descriptor")
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "get_ipython"
        ):
            magic = node.args[0] if node.args else None
            spelled = str(magic.value) if isinstance(magic, ast.Constant) else ""
            if func.attr == "run_line_magic" and spelled in LINE_MAGICS:
                self.allowed.add(id(func.value.func))
            elif func.attr in ("system", "getoutput"):
                self.allowed.add(id(func.value.func))
                self.flag(node, "runs a shell command (!...)")
            elif func.attr == "run_line_magic":
                self.allowed.add(id(func.value.func))
                self.flag(node, f"uses the %{spelled} magic")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, str):
            if value in ATTRIBUTES and value.startswith("_"):
                self.flag(node, f"spells {value!r} ({ATTRIBUTES[value]})")
            elif value.startswith(PATHS) or "/proc/" in value:
                self.flag(node, f"names {value[:40]!r} (the system's process files)")
            elif "LABKIT_" in value:
                self.flag(node, "names a grading variable")


def _called(node: ast.AST) -> bool:
    """Whether an attribute chain starts from a call's result (``type(x).method``)."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return isinstance(node, ast.Call)


def _root(node: ast.AST | None) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _python(source: str) -> tuple[str, list[Finding], int]:
    """The cell as Python (magics turned into calls), findings about cell magics, line offset."""
    first, _, body = source.partition("\n")
    findings: list[Finding] = []
    offset = 0
    if first.startswith("%%"):
        name = first[2:].split(" ")[0].strip()
        if name not in CELL_MAGICS:
            findings.append(Finding("", 1, f"uses the %%{name} cell magic"))
            return "", findings, 0
        source, offset = body, 1
    from IPython.core.inputtransformer2 import TransformerManager

    manager = TransformerManager()  # type: ignore[no-untyped-call]
    try:
        python: str = manager.transform_cell(source)
    except Exception:  # IPython could not read it: the cell fails when run, nothing to flag
        python = ""
    return python, findings, offset


def scan_cell(source: str, *, cell: str = "", protected: Iterable[str] = ()) -> list[Finding]:
    """What in one learner cell reaches into the machinery (empty for honest exercise code).

    ``protected`` are the names of the lesson's own objects (changing them is flagged).

    Example::

        assert scan_cell("async def f():\\n    await asyncio.sleep(1)") == []
    """
    python, findings, offset = _python(source)
    findings = [Finding(cell, f.line, f.what) for f in findings]
    if not python:
        return findings
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return findings  # it fails when run; a syntax error reaches nothing
    scanner = _Scanner(cell, set(protected), offset)
    scanner.visit(tree)
    return sorted({*findings, *scanner.findings}, key=lambda f: (f.line, f.what))
