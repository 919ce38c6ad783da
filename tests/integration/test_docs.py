"""The API reference: every public name's docstring says what it is and documents what it takes.

The checks read docstrings as Google-style sections (``Args:``, ``Attributes:``, ``Returns:``,
``References:``, ...; a header alone on its line, its entries indented under it) and compare them
with the objects themselves: every parameter of a signature must have an entry, every entry must
name a parameter, every function that returns something says what, every algorithm states its
update rule (``.. math::``, including torch's variants its options switch on) and cites its
paper. The checker is tested on deliberately bad docstrings at the end, so that it can fail.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import itertools
import pydoc
import re
import sys
import textwrap
import types
from typing import Any, NamedTuple

import pytest

import optim_jax
from optim_jax import lr_scheduler, schedules

# -- what is public ---------------------------------------------------------------------------


def _public_names(module: types.ModuleType) -> list[str]:
    """``module.__all__``, or its non-underscore callables defined in it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    )


PUBLIC = [
    (module, name)
    for module in (optim_jax, schedules, lr_scheduler)
    for name in _public_names(module)
]
IDS = [f"{module.__name__}.{name}" for module, name in PUBLIC]

# The algorithms: each states its update rule and cites where it comes from.
ALGORITHMS = [
    "sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam", "radam",
    "rmsprop", "rprop", "adafactor", "muon", "sparse_adam", "lbfgs",
]

# An option of an algorithm that changes its arithmetic must show in the update rule, written
# with this token (outside the Args/Returns sections).
VARIANT_TOKENS = {
    "maximize": r"\pm",
    "weight_decay": r"\lambda",
    "amsgrad": r"\max",
    "nesterov": "nesterov",
    "centered": "centered",
    "decoupled_weight_decay": "decoupled",
    "momentum": r"\mu",
}

SECTION_NAMES = (
    "Args", "Arguments", "Attributes", "Returns", "Yields", "Raises", "References", "Example",
    "Examples", "Note", "Notes", "Warning", "See Also",
)
_SECTION = re.compile(rf"^({'|'.join(SECTION_NAMES)}):\s*$")
# An entry: ``name: text``, ``name (type): text``, ``*args: text`` or ``a, b, c: text``.
_NAME = r"\*{0,2}[A-Za-z_]\w*(?:\s*\([^)]*\))?"
_ENTRY = re.compile(rf"^(?P<names>{_NAME}(?:,\s*{_NAME})*):(?:\s|$)")
_YEAR = re.compile(r"\b(19|20)\d\d\b")
_LINKED_TITLE = re.compile(r"`[^`<]+<https?://[^>\s]+>`_", re.DOTALL)

# -- reading docstrings -----------------------------------------------------------------------


def own_doc(obj: Any) -> str:
    """``obj``'s own docstring, cleaned; '' where it has none or only an inherited one."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
    elif isinstance(obj, types.ModuleType) or callable(obj):
        doc = getattr(obj, "__doc__", None)
    else:
        doc = None
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def attribute_doc(name: str, modules: list[types.ModuleType]) -> str:
    """The string literal under a module-level ``name = ...`` (Sphinx's attribute docstring)."""
    for module in modules:
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError):
            continue
        for statement, following in itertools.pairwise(tree.body):
            targets = (
                statement.targets if isinstance(statement, ast.Assign)
                else [statement.target] if isinstance(statement, ast.AnnAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                value = following.value if isinstance(following, ast.Expr) else None
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return inspect.cleandoc(value.value)
                return ""
    return ""


def data_doc(module: types.ModuleType, name: str, obj: Any) -> str:
    """A public value that is neither a function, a class nor a module: its attribute docstring,
    or the docstring of its type where optim_jax defines the type (a sentinel's class)."""
    package = [m for key, m in sorted(sys.modules.items()) if key.startswith("optim_jax.")]
    doc = attribute_doc(name, [module, *package])
    if doc:
        return doc
    kind = type(obj)
    if kind.__module__.startswith("optim_jax"):
        return own_doc(kind)
    return ""


def summary(doc: str) -> str:
    return doc.split("\n\n", 1)[0]


def sections(doc: str) -> dict[str, str]:
    """The Google-style sections: header -> its body (the indented lines under it)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in doc.splitlines():
        match = _SECTION.match(line)
        if match:
            current = match.group(1)
            found[current] = []
        elif current is not None:
            if line.strip() and not line[0].isspace():
                current = None
            else:
                found[current].append(line)
    return {header: "\n".join(lines) for header, lines in found.items()}


def description(doc: str) -> str:
    """The docstring without its sections: the prose and the formulas."""
    kept, inside = [], False
    for line in doc.splitlines():
        if _SECTION.match(line):
            inside = True
        elif inside and line.strip() and not line[0].isspace():
            inside = False
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def entries(body: str) -> tuple[list[str], list[str]]:
    """``(names, malformed lines)`` of a section's entries (lines at its first indentation)."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return [], []
    indent = len(lines[0]) - len(lines[0].lstrip())
    names, malformed = [], []
    for line in lines:
        depth = len(line) - len(line.lstrip())
        if depth < indent:
            malformed.append(line)
        elif depth == indent:
            match = _ENTRY.match(line.strip())
            if match is None:
                malformed.append(line)
                continue
            for part in match.group("names").split(","):
                names.append(re.sub(r"\([^)]*\)", "", part).strip().lstrip("*"))
    return names, malformed


def signature_names(obj: Any) -> list[str]:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name not in ("self", "cls")]


# -- the checks -------------------------------------------------------------------------------


def is_stateful_optimizer(obj: Any) -> bool:
    return (
        inspect.isclass(obj)
        and issubclass(obj, optim_jax.Optimizer)
        and isinstance(obj.__dict__.get("transform"), staticmethod)
    )


def is_named_tuple(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def substance_problems(doc: str) -> list[str]:
    if not doc:
        return ["no docstring"]
    first = summary(doc)
    problems = []
    if "\n" in first:
        problems.append(f"the summary is not one line: {first!r}")
    if len(first.split()) < 4:
        problems.append(f"the summary is too thin: {first!r}")
    if re.search(r"\b(TODO|FIXME|XXX)\b", doc):
        problems.append("a placeholder is left in the docstring")
    return problems


def args_problems(doc: str, parameters: list[str], header: str = "Args") -> list[str]:
    """Every parameter has an entry under ``header``, and every entry names a parameter."""
    if not parameters:
        return []
    body = sections(doc).get(header)
    if body is None:
        return [f"no {header}: section (parameters {parameters})"]
    names, malformed = entries(body)
    problems = [f"{header}: unreadable entry {line.strip()!r}" for line in malformed]
    missing = [p for p in parameters if p not in names]
    unknown = [n for n in names if n not in parameters]
    if missing:
        problems.append(f"{header}: no entry for {missing}")
    if unknown:
        problems.append(f"{header}: entries for parameters that do not exist: {unknown}")
    return problems


def returns_problems(obj: Any, doc: str) -> list[str]:
    """A function that returns something (annotated other than ``None``) says what."""
    if inspect.isclass(obj) or not callable(obj):
        return []
    try:
        annotation = inspect.signature(obj).return_annotation
    except (TypeError, ValueError):
        return []
    if annotation in (None, "None", type(None)):
        return []
    body = sections(doc).get("Returns", "")
    if not body.strip():
        return ["no Returns: section"]
    return []


def stateful_problems(cls: type) -> list[str]:
    """A torch-style class built from a pure factory: its constructor is the factory's
    signature plus ``params`` and torch's ignored options (see ``Optimizer.__init_subclass__``),
    so its docstring points to the factory for the arguments and covers the rest itself."""
    doc = own_doc(cls)
    factory = cls.__dict__["transform"].__func__
    problems = []
    if not re.search(rf"\b{re.escape(factory.__name__)}\b", doc):
        problems.append(f"the docstring does not point to the factory {factory.__name__}")
    factory_args = set(entries(sections(own_doc(factory)).get("Args", ""))[0])
    class_args = set(entries(sections(doc).get("Args", ""))[0])
    for name in signature_names(cls):
        if name in factory_args or name in class_args:
            continue
        if not re.search(rf"``{re.escape(name)}``|\b{re.escape(name)}:", doc):
            problems.append(f"constructor argument {name!r} is documented neither by "
                            f"{factory.__name__} nor by the class")
    return problems


def problems_of(obj: Any, doc: str) -> list[str]:
    """What the reference lacks for ``obj``, whose docstring is ``doc``."""
    problems = substance_problems(doc)
    if not doc or isinstance(obj, types.ModuleType):
        return problems
    if is_named_tuple(obj):
        problems += args_problems(doc, list(obj._fields), "Attributes")
    elif is_stateful_optimizer(obj):
        problems += stateful_problems(obj)
    elif inspect.isclass(obj) or inspect.isroutine(obj):
        problems += args_problems(doc, signature_names(obj))
        problems += returns_problems(obj, doc)
    return problems


def doc_of(module: types.ModuleType, name: str) -> tuple[Any, str]:
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, types.ModuleType):
        return obj, own_doc(obj)
    return obj, data_doc(module, name, obj)


def algorithm_problems(factory: Any) -> list[str]:
    doc = own_doc(factory)
    prose = description(doc)
    problems = []
    if ".. math::" not in prose:
        problems.append("no `.. math::` block with the update rule")
    for option, token in VARIANT_TOKENS.items():
        if option in signature_names(factory) and token not in prose:
            problems.append(f"the update rule does not show {option!r} (no {token!r})")
    references = sections(doc).get("References", "")
    if not references.strip():
        problems.append("no References: section")
    else:
        if not _YEAR.search(references):
            problems.append("References: no year")
        if not _LINKED_TITLE.search(references):
            problems.append("References: no linked title (`Title <https://...>`_)")
    return problems


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=IDS)
def test_public_name_is_documented(module, name):
    obj, doc = doc_of(module, name)
    assert not problems_of(obj, doc), f"{module.__name__}.{name}: {problems_of(obj, doc)}"


def _public_methods() -> list[tuple[str, Any]]:
    found = []
    for module, name in PUBLIC:
        cls = getattr(module, name)
        if not inspect.isclass(cls) or is_named_tuple(cls):
            continue
        for attribute, value in vars(cls).items():
            if attribute.startswith("_") or attribute == "transform":
                continue
            function = value.fget if isinstance(value, property) else value
            function = getattr(function, "__func__", function)
            if inspect.isfunction(function):
                found.append((f"{module.__name__}.{name}.{attribute}", function))
    return found


METHODS = _public_methods()


@pytest.mark.parametrize(("qualname", "method"), METHODS, ids=[q for q, _ in METHODS])
def test_public_method_is_documented(qualname, method):
    """Methods: a docstring with a summary, naming each argument (an ``Args:`` entry or
    ``name`` in the text), as torch's and optax's short method docstrings do."""
    doc = own_doc(method)
    problems = substance_problems(doc)
    for parameter in signature_names(method):
        if parameter in ("args", "kwargs"):
            pattern = rf"\*{{1,2}}{parameter}\b|``{parameter}``"
        else:
            pattern = rf"``{re.escape(parameter)}``|^\s+{re.escape(parameter)}\s*(\(.*\))?:"
        if not re.search(pattern, doc, re.MULTILINE):
            problems.append(f"argument {parameter!r} is not named")
    assert not problems, f"{qualname}: {problems}"


@pytest.mark.parametrize("name", ALGORITHMS)
def test_algorithm_states_its_math_and_reference(name):
    factory = getattr(optim_jax, name)
    problems = algorithm_problems(factory)
    assert not problems, f"optim_jax.{name}: {problems}"


@pytest.mark.parametrize("name", ALGORITHMS)
def test_stateful_class_of_algorithm_documents_its_constructor(name):
    classes = [
        getattr(optim_jax, n) for n in optim_jax.__all__
        if is_stateful_optimizer(getattr(optim_jax, n))
        and getattr(optim_jax, n).__dict__["transform"].__func__ is getattr(optim_jax, name)
    ]
    assert len(classes) == 1, f"no single stateful class over optim_jax.{name}: {classes}"
    cls = classes[0]
    assert "params" in signature_names(cls)
    assert not stateful_problems(cls), f"{cls.__name__}: {stateful_problems(cls)}"
    # help(cls) shows the class's docstring once; the constructor points to it
    assert cls.__name__ in inspect.getdoc(cls.__init__)
    text = " ".join(pydoc.render_doc(cls, renderer=pydoc.plaintext).split())
    assert text.count(" ".join(summary(inspect.getdoc(cls)).split())) == 1


@pytest.mark.parametrize(
    "obj", [optim_jax.adam, optim_jax.Adam, optim_jax.sgd, schedules.step_lr,
            lr_scheduler.StepLR, optim_jax.chain],
    ids=lambda obj: obj.__name__,
)
def test_pydoc_renders_summary_and_sections(obj):
    text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
    flat = " ".join(text.split())
    assert " ".join(summary(own_doc(obj)).split()) in flat
    assert "Args:" in text or is_stateful_optimizer(obj)
    assert obj.__name__ + "(" in flat  # the signature


def test_help_adam_reads_well():
    text = pydoc.render_doc(optim_jax.adam, renderer=pydoc.plaintext)
    flat = " ".join(text.split())
    assert "adam(lr" in flat and "decoupled_weight_decay" in flat
    for needle in ("Adam", ".. math::", "Args:", "Returns:", "References:", "1412.6980"):
        assert needle in text, needle


EXAMPLES = [
    (f"{module.__name__}.{name}", getattr(module, name))
    for module, name in PUBLIC
    if ">>>" in own_doc(getattr(module, name))
]


def test_there_are_examples():
    assert {"optim_jax.adam", "optim_jax.Adam", "optim_jax.sgd"} <= {q for q, _ in EXAMPLES}


@pytest.mark.parametrize(("qualname", "obj"), EXAMPLES, ids=[q for q, _ in EXAMPLES])
def test_docstring_examples_run(qualname, obj):
    """The ``Example:`` sections are doctests, and they pass."""
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(recurse=False).find(obj, qualname, globs={}):
        runner.run(test, out=lambda text: None)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0, f"{qualname}: {results}"


@pytest.mark.parametrize("module", [optim_jax, schedules, lr_scheduler],
                         ids=lambda m: m.__name__)
def test_module_docstring(module):
    doc = own_doc(module)
    assert not substance_problems(doc), substance_problems(doc)
    assert len(doc) > 200


# -- the checker fails where it should --------------------------------------------------------


def _bad_factory(lr, momentum=0.0):
    """A factory whose docstring forgets an argument and documents a stale one.

    Args:
      lr: the learning rate.
      beta: no longer an argument.
    """
    return lr, momentum


def _no_returns(x):
    """Returns twice its argument, but has no section that says so.

    Args:
      x: a number.
    """
    return 2 * x


class _UndocumentedState(NamedTuple):
    """A state that names none of its fields in Attributes."""

    count: int
    mu: float


def _unreferenced(lr: float = 1.0, maximize: bool = False) -> Any:
    """An algorithm with a formula that ignores maximize, and no paper.

    .. math::
        \\theta_t = \\theta_{t-1} - \\gamma g_t

    Args:
      lr: the learning rate.
      maximize: maximise instead.

    Returns:
      Something.

    References:
      Nobody, sometime.
    """


def test_checker_reports_bad_docstrings():
    assert any("no entry for ['momentum']" in p for p in problems_of(_bad_factory,
                                                                       own_doc(_bad_factory)))
    assert any("do not exist: ['beta']" in p for p in problems_of(_bad_factory,
                                                                    own_doc(_bad_factory)))
    assert "no Returns: section" in problems_of(_no_returns, own_doc(_no_returns))
    assert any("Attributes" in p for p in problems_of(_UndocumentedState,
                                                        own_doc(_UndocumentedState)))
    problems = algorithm_problems(_unreferenced)
    assert any("'maximize'" in p for p in problems)
    assert "References: no year" in problems
    assert any("linked title" in p for p in problems)
    assert substance_problems("") == ["no docstring"]
    assert substance_problems("Adam.")  # too thin
    assert substance_problems("A summary that goes on\nto a second line.\n\nBody.")


def test_checker_reads_entries():
    body = textwrap.indent(
        "a: one.\n  continued.\nb (int): two.\nc, d: three.\n*args: rest.\nnot an entry\n", "  "
    )
    names, malformed = entries(body)
    assert names == ["a", "b", "c", "d", "args"]
    assert [line.strip() for line in malformed] == ["not an entry"]
