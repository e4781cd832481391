"""The bncli command line: thin commands that parse flags, call the library, and render.

    bncli depth-study --init kaiming
    bncli running-stats --momentum 0.3

Every command is a thin layer over the Python API (bncli.api) and renders with the study's
own renderer. The library's imports (torch, pandas, pydantic) happen inside the commands, so
`--help` is instant. Errors the user can fix come out as one line on stderr with a non-zero
exit code.
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from bncli import __version__
from bncli.choices import Backend, Format
from bncli.errors import BncliError, first_line, plural


class _Group(TyperGroup):
    """Turns every usage error, ours or click's, into one line: `Error: ...`; gives every
    registered study a command, declared below or built from its config model."""

    def list_commands(self, ctx):
        from bncli import studies

        return [*studies.names(), *self.commands]

    def get_command(self, ctx, name):
        from bncli import studies

        if name not in studies.REGISTRY:
            return super().get_command(ctx, name)
        return _study_command(name)

    def get_params(self, ctx):
        # An unused flag defaulting to None (--help, typer's completion flags) is coerced through
        # a pydantic adapter, importing pydantic (~0.1 s) on `bncli CMD --help`; False skips that.
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.default is None:
                p.default = False
        return params

    def invoke(self, ctx):
        # A Ctrl-C outside a study's own handling (while the report of a saved run or sweep is
        # printed, or before anything started) would reach typer, which exits 130 in silence.
        SAVED.clear()  # one command's (CliRunner runs many in one process)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            where = f"the results are saved in {_plain(str(SAVED[-1]))}" if SAVED else "nothing was saved"
            typer.echo(f"interrupted: {where}", err=True)
            sys.exit(130)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        args = sys.argv[1:] if args is None else list(args)
        _refuse_nul(args)
        completing = _check_completion(complete_var or COMPLETE_VAR)
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except BncliError as e:
            _fail(str(e), e.exit_code)
        except typer.Abort:
            _fail("aborted", 130)
        except Exception as e:
            # click's usage errors (typer vendors click in recent releases, so match by shape)
            exit_code = getattr(e, "exit_code", None)
            if completing and not hasattr(e, "format_message"):  # what the shell asked could not be answered
                _fail(f"{completing}: shell completion failed: {first_line(e)}", 1)
            if not (hasattr(e, "format_message") and isinstance(exit_code, int)):
                raise
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _fail(_choice_error(e, args) or e.format_message() + hint, exit_code)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


SAVED: list[Any] = []  # the run or sweep directory a command has saved, for a Ctrl-C that comes after

COMPLETE_VAR = "_BNCLI_COMPLETE"  # what the completion script bncli --install-completion writes sets


def _check_completion(var: str) -> str | None:
    """`VAR=INSTRUCTION` when the shell asks for completions (None otherwise). Bash passes the
    words in COMP_WORDS and the index of the one being completed in COMP_CWORD; a request without
    them, or with an index that is not a whole number, is one line, not Typer's traceback."""
    import os

    instruction = os.environ.get(var)
    if instruction is None:
        return None
    if instruction == "complete_bash":
        missing = [v for v in ("COMP_WORDS", "COMP_CWORD") if v not in os.environ]
        if missing:
            _fail(
                f"{var}={instruction}: bash completion needs {' and '.join(missing)}, which bash sets "
                "(install it with bncli --install-completion)",
                2,
            )
        cword = os.environ["COMP_CWORD"]
        if not cword.strip().isdigit():
            _fail(f"COMP_CWORD: expected the index of the word to complete (a whole number >= 0), got {cword!r}", 2)
    return f"{var}={instruction}"


def _choices(param) -> list[str] | None:
    """The words a click parameter accepts, when it is a closed choice (an enum flag)."""
    desc = getattr(param, "type_descriptor", None)  # typer 0.2x coerces itself
    kind = desc if desc is not None else getattr(param, "type", None)  # older typer: a click.Choice
    found = getattr(kind, "choices", None)
    return [str(getattr(c, "value", c)) for c in found] if found else None


def _given(args: list[str], opts: list[str]) -> tuple[str, str] | None:
    """The last `--flag VALUE` or `--flag=VALUE` of one of `opts` on the command line."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                found = opt, args[i + 1]
            elif arg.startswith(opt + "="):
                found = opt, arg[len(opt) + 1 :]
    return found


def _choice_error(e: Exception, args: list[str]) -> str | None:
    """click's refusal of a value outside an enum flag's choices, in bncli's words, the same
    for every enum flag of every command: `--init: 'kaimng' is not one of kaiming, ... (did
    you mean 'kaiming'?)`. None for any other usage error."""
    from bncli.errors import not_one_of

    param = getattr(e, "param", None)
    choices = _choices(param)
    if not choices:
        return None
    given = _given(args, list(getattr(param, "opts", [])))
    if given is None or given[1] in choices:
        return None
    return f"{given[0]}: {not_one_of(given[1], choices)}"


def _refuse_nul(args: list[str]) -> None:
    """No path or value can hold a NUL byte; some click versions let one reach os.stat, which
    raises a bare ValueError. Refuse it here, naming the flag, whatever parses the rest."""
    for i, arg in enumerate(args):
        if "\x00" in arg:
            flag, _, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
            flag = flag or (args[i - 1] if i and args[i - 1].startswith("-") else "argument")
            _fail(f"{flag}: {value!r} is not a valid name or path: it holds a NUL byte", 2)


MAX_LINE = 1000  # characters of an error line: a 1 MB YAML key makes a short one


def _plain(text: str) -> str:
    """No control character or lone surrogate from a hostile file or path reaches the terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _fail(message: str, code: int):
    # one bounded line
    text = _plain(" ".join(message.split()))
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... ({len(text) - MAX_LINE} more characters)"
    typer.echo(f"Error: {text}", err=True)
    sys.exit(code)


# plain click help, not rich panels: rendering them costs ~0.1 s, half of `bncli --help`
app = typer.Typer(
    cls=_Group,
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Experiments on how weight init and normalization shape the signal in deep nets.",
)


def _version(value: bool):
    if value:
        typer.echo(f"bncli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
):
    pass


class OutputError(Exception):
    """stdout refused the printout (closed, full, an I/O error): not an OSError, so that no reader
    of saved results (`_reading`) mistakes it for a file it could not read; main reports it."""

    def __init__(self, e: OSError) -> None:
        super().__init__(e.strerror or str(e))
        self.errno = e.errno


class _Out:
    """stdout as rich writes to it: a reader that went away (`| head -1`) ends the printout,
    not the command, which has saved its results and exits 0; any other failure to write is an
    OutputError."""

    def __init__(self, stream):
        self.stream, self.gone = stream, False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self.gone = True
            except OSError as e:
                raise OutputError(e) from None
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.gone = True
            except OSError as e:
                raise OutputError(e) from None

    def __getattr__(self, name):  # isatty, encoding, fileno: the stream's own
        return getattr(self.stream, name)


def _is_terminal(stream) -> bool:
    return stream.isatty()  # docs/make_docs.py makes it a terminal, to show what a person sees


def _console(stderr: bool = False):
    """Rich on a terminal; into a file or a pipe (a CI log), as wide as the tables need: rich
    would otherwise assume 80 columns and cut every number that does not fit."""
    stream = sys.stderr if stderr else sys.stdout
    out = _Out(stream)
    piped, terminal = _consoles()
    if not _is_terminal(stream):
        return piped(file=out, width=100_000, soft_wrap=True)
    console = terminal(file=out)
    return console if console.width >= 20 else terminal(file=out, width=80)  # COLUMNS=0 would print nothing


def _narrow(console: Any, table: Any) -> list[Any]:
    """Leave out columns until the table fits: those the table names first (its `drop`),
    else the last ones, never the first; returns their headers, in the table's order."""
    widths = [console._natural(c) for c in table.columns]
    named = [i for h in getattr(table, "drop", ()) for i, c in enumerate(table.columns) if c.header == h]
    for i, c in enumerate(table.columns):  # but for the text that may wrap, a column is on one line, or goes
        if named and c.header not in getattr(table, "wrap", ()):
            widths[i] = console._natural(c, one_line=True)
    gone: list[int] = []
    for i in named or range(len(widths) - 1, 0, -1):
        if sum(w for j, w in enumerate(widths) if j not in gone) + 1 <= console.width:  # + 1: the left border
            break
        gone.append(i)
    headers = [table.columns[i].header for i in sorted(gone)]
    for i in sorted(gone, reverse=True):
        table.columns.pop(i)
    if named and sum(w for j, w in enumerate(widths) if j not in gone) + 1 > console.width:
        # still too wide, with only the columns that must stay: the text folds, each keeping a share
        share = max(8, (console.width - 1) // len(table.columns) - 3)
        for c in table.columns:
            c.no_wrap, c.min_width = False, min(share, console._natural(c) - 3)
    return headers


@functools.cache
def _consoles():
    """(piped, terminal) console classes. Into a file or a pipe, tables are plain columns with no
    box lines for grep and awk to step over (rich adds no colour codes off a terminal). On a
    terminal too narrow for a table, its last columns are left out, with a note naming them,
    rather than folding numbers across lines."""
    from rich.console import Console, RenderableType
    from rich.measure import Measurement
    from rich.table import Table

    class Piped(Console):
        def print(self, *objects, **kwargs):
            for o in objects:
                if isinstance(o, Table):
                    o.box, o.pad_edge, o.title_justify = None, False, "left"
            super().print(*objects, **kwargs)

        def _render_buffer(self, buffer) -> str:  # a left-justified last column pads every line
            return "\n".join(line.rstrip(" ") for line in super()._render_buffer(buffer).split("\n"))

    class Terminal(Console):
        def _natural(self, column, one_line: bool = False) -> int:
            """The column's width with its padding and border: numbers and names keep their
            widest cell on one line; text (left-justified, with spaces) may wrap between words,
            unless `one_line`."""
            column.no_wrap = one_line or column.justify != "left" or not any(" " in str(c) for c in column._cells)
            size = [Measurement.get(self, self.options, c) for c in [column.header, *column._cells]]
            return max(m.maximum if column.no_wrap else m.minimum for m in size) + 3

        def print(self, *objects, **kwargs):
            for o in objects:
                left_out: list[RenderableType] = []
                if isinstance(o, Table):
                    left_out = _narrow(self, o)
                super().print(o, **kwargs)
                if left_out:
                    super().print(
                        f"(too narrow for {', '.join(map(str, left_out))}: widen the terminal, or use --format csv)",
                        markup=False,
                        highlight=False,
                    )

    return Piped, Terminal


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends a run the way Ctrl-C does: what was computed is saved, marked interrupted.

    Only the first signal interrupts. Later ones (an impatient second Ctrl-C) are noted and
    otherwise ignored until the command has saved what it computed, so they cannot cut the
    saving short; the command then exits 130 as for the first.
    """
    signals = [signal.SIGINT, signal.SIGTERM]
    taken = []

    def interrupt(signum, frame):
        taken.append(signum)
        if len(taken) == 1:
            raise KeyboardInterrupt
        if len(taken) == 2:
            sys.stderr.write("saving what was computed; it will be kept (one moment)\n")

    try:
        old = [signal.signal(s, interrupt) for s in signals]
    except ValueError:  # not the main thread: leave signals alone
        old = None
    try:
        yield
    finally:
        if old is not None:  # once interrupted, the command only reports and exits 130, whatever follows
            for s, handler in zip(signals, old, strict=True):
                signal.signal(s, signal.SIG_IGN if taken else handler)


@contextmanager
def _reading(path: Any) -> Iterator[None]:
    """Saved results the system cannot read (a directory where a file belongs, no permission) are
    one line naming the path. Files that are not as bncli writes them, bncli's readers find and
    name themselves (errors.Damaged); anything else is a bug in bncli, and shows as one."""
    from bncli.errors import Damaged

    try:
        yield
    except OSError as e:
        raise Damaged(path, first_line(e)) from None


@contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Any]:
    """A transient progress bar on a terminal (into a pipe or a file, rich would leave a blank
    line where it was); yields the callback a study calls with units done (and, a sweep, the run
    it is on)."""
    console = _console()
    if not enabled or not console.is_terminal:
        yield None
        return
    bar = progress_bar(console)
    task = None

    def update(done: int, total: int = total, current: str | None = None) -> None:
        nonlocal task
        if task is None:  # shown from the first step: a refusal before it prints one clean line
            bar.start()  # runs already done on --resume do not count towards the ETA
            task = bar.add_task(label, total=total, completed=done, current="")
        bar.update(task, completed=done, current=current or "")

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def progress_bar(console: Any) -> Any:
    """The bar, its count, the time elapsed, the rate and the time left, then what it is on (a
    sweep's run): that last text is what gives way, ellipsised, on a narrow terminal; the
    numbers keep their width."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?/s" if speed is None else f"{speed:.3g}/s", style="progress.data.speed")

    def whole() -> Column:  # a number: never cut
        return Column(no_wrap=True)

    return Progress(
        TextColumn("[progress.description]{task.description}", table_column=whole()),
        BarColumn(bar_width=12, table_column=whole()),
        MofNCompleteColumn(table_column=whole()),
        TimeElapsedColumn(table_column=whole()),
        Rate(table_column=whole()),
        TextColumn("eta", table_column=whole()),
        TimeRemainingColumn(table_column=whole()),
        TextColumn("{task.fields[current]}", table_column=Column(overflow="ellipsis", ratio=1)),
        transient=True,
        console=console,
    )


def _run(
    study: str,
    config: Path | None,
    out: Path,
    name: str | None,
    output: tuple[Format, bool, dict[str, Any]] = (Format.table, False, {}),
    **flags: Any,
) -> None:
    """Load the config (flags over --config), run and record the study, render its result as
    output = (format, quiet, the study's own options) asks."""
    from bncli import api, studies
    from bncli import config as cfgmod

    mod = studies.get(study)
    cfg = cfgmod.load(mod.CONFIG, config, whose=studies.whose(study), **flags)
    total = mod.progress_total(cfg)
    try:
        with _sigterm_as_interrupt(), _progress(total or 0, study, total is not None) as cb:
            run = api.execute(study, cfg, out, name, progress=cb, flags=True)
        SAVED.append(run.dir)
    except KeyboardInterrupt:  # before the study's first step: there was nothing to keep
        _console().print("interrupted before the run started: nothing was saved")
        raise typer.Exit(130) from None
    assert run.dir is not None  # given `out`, execute saves the run there
    fmt, quiet, options = output
    console, notes = _streams(fmt, quiet)
    if quiet:
        console.print(_plain(str(run.dir)), markup=False, highlight=False)
    elif fmt != Format.table:
        _print_data(console, run.to_dict(), run.dir / mod.CSV, fmt)
    else:
        if run.table is not None:
            for part in mod.render(run, **options):
                console.print(part)
        if mod.RUN_PLOT and (run.dir / mod.PLOT).exists():
            console.print(f"plot: {_plain(str(run.dir / mod.PLOT))}", markup=False)
    if run.status == "interrupted":
        notes.print(f"interrupted: partial results saved in {_plain(str(run.dir))}", markup=False)
        raise typer.Exit(130)
    if run.stop_asked:
        notes.print(f"interrupted while saving: the finished run is saved in {_plain(str(run.dir))}", markup=False)
        raise typer.Exit(130)
    if fmt == Format.table and not quiet:
        console.print(f"results: {_plain(str(run.dir))}", markup=False)


def _streams(fmt: Format, quiet: bool):
    """(result, notes) consoles: for people both stdout; for scripts (--quiet, csv, json)
    stdout holds only the result, and notes go to stderr."""
    out = _console()
    return out, out if fmt == Format.table and not quiet else _console(stderr=True)


def _print_data(console, document: dict, csv: Path, fmt: Format) -> None:
    """--format csv: the CSV file as it is on disk; json: one document, non-finite numbers null."""
    if fmt == Format.json:
        return _print_json(console, document)
    from bncli import results

    # bounded, and refused unless a regular file: it has been read and checked already, but may have changed since
    console.file.write(results.read_file(csv, results.MAX_TABLE).decode() if csv.exists() else "")
    console.file.flush()


def _finite(v: Any) -> Any:
    """`v` with every number that is not finite as None: strict JSON, whatever a saved file held
    (`"wall_seconds": NaN` in meta.json, `init_std: .nan` in config.yaml)."""
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _print_json(console, document) -> None:
    """One strict JSON document on one line: a number that is not finite is null."""
    import json

    console.file.write(json.dumps(_finite(document), allow_nan=False, default=str) + "\n")
    console.file.flush()


def _study_command(study: str) -> Any:
    """The command of a study: --config, one flag per config field and per option of the study's
    own (bncli.flags makes them from its spec), then --out, --name, --format and --quiet. The
    study module's docstring is its help."""
    import inspect

    from bncli import flags, studies

    mod = studies.get(study)
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("config", kw, default=None, annotation=ConfigOpt),
        *flags.parameters(mod.CONFIG),
        inspect.Parameter("out", kw, default=Path("results"), annotation=OutOpt),
        inspect.Parameter("name", kw, default=None, annotation=NameOpt),
        inspect.Parameter("format", kw, default=Format.table, annotation=FormatOpt),
        inspect.Parameter("quiet", kw, default=False, annotation=QuietOpt),
        *flags.parameters(mod.OPTIONS, config=False),
    ]

    def command(config: Path | None, out: Path, name: str | None, format: Format, quiet: bool, **given: Any) -> None:
        options = {k: given.pop(k) for k in mod.OPTIONS.FIELDS}
        _run(study, config, out, name, (format, quiet, options), **flags.config_values(mod.CONFIG, given))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    doc = (mod.__doc__ or study).strip()
    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    one.command(study, help=doc, short_help=doc.splitlines()[0])(command)
    return typer.main.get_command(one)


FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        help="table for people; csv: the result's CSV; json: "
        "one document with the settings, status and rows (non-finite: null).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the run directory (for scripts).")]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="YAML config file; flags override its fields.", show_default=False)
]
OutOpt = Annotated[Path, typer.Option(help="Root directory for results.")]
NameOpt = Annotated[
    Optional[str], typer.Option(help="Run name (default: a timestamp and the settings).", show_default=False)
]


@app.command("sweep", short_help="Run a study over a grid of settings x seeds, then aggregate.")
def sweep_cmd(
    file: Annotated[
        Optional[Path],
        typer.Argument(help="Sweep file: study, base, grid, seeds (optional with --study).", show_default=False),
    ] = None,
    study: Annotated[
        Optional[str],
        typer.Option(
            metavar="STUDY",
            help="The study to sweep (needed without FILE; with one, it must be the file's).",
            show_default=False,
        ),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="A base setting (repeatable); overrides the file's, and takes KEY off its grid.",
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        Optional[list[str]],
        typer.Option(
            metavar="KEY=V1,V2",
            help="One grid axis (repeatable); replaces the file's axis of KEY. KEY=[...] is one "
            "YAML list, for values holding commas.",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        Optional[str],
        typer.Option(
            metavar="SEEDS",
            help="A range 0-4 (inclusive), a list 0,1,5, or one seed 3; replaces the file's.",
            show_default=False,
        ),
    ] = None,
    out: OutOpt = Path("results"),
    name: Annotated[
        Optional[str],
        typer.Option(
            help="Sweep name (default: the file's `name`, else its stem; without a file, the study and the grid's "
            "keys).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish an existing sweep: skip runs already ok or diverged, redo the rest."),
    ] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed run.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes running in parallel (spawned; torch threads are split between them).")
    ] = 1,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    backend: Annotated[
        Backend,
        typer.Option(
            help='local: this machine; ray: one Ray task per run (needs the ray extra: pip install -e ".[ray]").'
        ),
    ] = Backend.local,
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Ray cluster to join: auto, or ray://HOST:10001 (default: start a local Ray instance).",
            show_default=False,
        ),
    ] = None,
    cpus_per_run: Annotated[
        float, typer.Option(min=0.01, help="Ray: CPUs reserved per run (also its torch threads).")
    ] = 1.0,
    gpus_per_run: Annotated[
        float, typer.Option(min=0.0, help="Ray: GPUs per run; 0.25 packs four runs on a GPU.")
    ] = 0.0,
    format: Annotated[
        Format,
        typer.Option(
            "--format",
            help="table for people; csv: summary.csv; json: one document with the study, grid keys and summary rows.",
        ),
    ] = Format.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the sweep directory.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the sweep's runs (the grid expanded) and their count; run none.")
    ] = False,
):
    """Run a study over a grid of settings times seeds; write summary.csv, aggregate.csv and a plot.

    The sweep is a FILE, flags, or both (flags win): --study, --set KEY=VALUE, --grid
    KEY=V1,V2 and --seeds; values read as in YAML (50 an int, 1e-5 a float). Every grid point
    is checked before anything runs. Runs go to OUT/sweeps/NAME/runs/, one directory each,
    exactly as a single run writes it; OUT/sweeps/NAME/sweep.yaml is the resolved sweep, a
    FILE that reruns it. Exit code 1 if any run failed, 130 if interrupted (finished runs are
    kept: add --resume to finish).

    Examples: bncli sweep configs/sweeps/init_vs_norm.yaml --workers 2;
    bncli sweep --study depth-study --set depth=50 --grid init=kaiming,xavier --grid norm=batchnorm,none --seeds 0-4
    """
    from bncli import api

    if dry_run:
        plan = api.plan_sweep(file, out, name, study=study, base=set_, grid=grid, seeds=seeds, flags=True)
        configs = len(plan.points) // len(plan.data["seeds"])  # the grid's product: each config times every seed
        console = _console()
        console.print(
            f"sweep {_plain(plan.name)}: {plural(len(plan.points), 'run')} ({plural(configs, 'config')} x "
            f"{plural(len(plan.data['seeds']), 'seed')}) into {_plain(str(plan.dir))}",
            markup=False,
        )
        for p in plan.points:
            console.print(_plain(p.name), markup=False, highlight=False)
        return
    ray = _ray_options(backend, address, cpus_per_run, gpus_per_run)
    with _sigterm_as_interrupt(), _progress(0, "sweep", progress) as cb:
        outcome = api.sweep(
            file,
            out,
            name,
            study=study,
            base=set_,
            grid=grid,
            seeds=seeds,
            flags=True,
            resume=resume,
            fail_fast=fail_fast,
            workers=workers,
            progress=cb,
            ray=ray,
        )
        SAVED.append(outcome.dir)
    _report_sweep(outcome, format, quiet)


def _report_sweep(outcome, fmt: Format, quiet: bool) -> None:
    """The sweep's table (or its data, or its directory alone) on stdout; notes, failures and
    interruptions on stdout for people and on stderr for scripts. Exit 1 if a run failed,
    130 if interrupted."""
    from bncli import results

    out, console = _streams(fmt, quiet)
    total = outcome.total
    if quiet:
        out.print(_plain(str(outcome.dir)), markup=False, highlight=False)
    elif (outcome.dir / "summary.csv").exists():
        sweep = results.open_sweep(outcome.dir)
        _print_sweep(out, sweep) if fmt == Format.table else _print_sweep_data(out, sweep, fmt)
    if outcome.skipped:
        done = "was" if outcome.skipped == 1 else "were"
        console.print(f"resumed: {outcome.skipped} of {plural(total, 'run')} {done} already done")
    for run_name, error in outcome.errors.items():
        from rich.text import Text

        console.print(Text("failed", "red") + Text(f" {_plain(run_name)}: {_plain(error)}"), highlight=False)
    if outcome.plot is not None and console is out:
        console.print(f"plot: {_plain(str(outcome.plot))}", markup=False)
    if console is out:
        console.print(f"results: {_plain(str(outcome.dir))}", markup=False)
    if outcome.unaggregated:
        console.print(
            "interrupted while writing summary.csv and aggregate.csv: every finished run is kept; "
            "rerun with --resume to write them"
        )
        raise typer.Exit(130)
    if outcome.interrupted:
        finished = sum(s in results.FINISHED for s in outcome.status.values())
        console.print(f"interrupted: {finished} of {plural(total, 'run')} finished; rerun with --resume to finish")
        raise typer.Exit(130)
    if outcome.stopped:
        console.print("stopped at the first failure (--fail-fast)")
    if outcome.failed:
        raise typer.Exit(1)


def _ray_options(backend: Backend, address: str | None, cpus: float, gpus: float):
    """Ray's options from the flags (None for the local backend), each checked up front."""
    import math

    if backend != Backend.ray:
        if address is not None:
            raise BncliError("--address: only with --backend ray")
        return None
    from bncli.ray_backend import RayOptions

    for flag, v in (("--cpus-per-run", cpus), ("--gpus-per-run", gpus)):
        if not math.isfinite(v):
            raise BncliError(f"{flag}: must be a finite number, got {v}")
    return RayOptions(address, cpus, gpus)


@app.command("plot", short_help="Plot a metric against layer for runs and sweeps.")
def plot_cmd(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Run and/or sweep directories.", show_default=False)
    ],
    metric: Annotated[
        Optional[str],
        typer.Option(
            help="Column to plot (any numeric column of the CSV; default: std, or running_mean and running_var).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="File to write: .png, .svg or .pdf (default: a PNG inside PATH when one is given, "
            "else in the current directory).",
            show_default=False,
        ),
    ] = None,
    where: Annotated[
        Optional[list[str]],
        typer.Option(
            help="KEY=VALUE: only runs with this setting (repeatable: a key twice matches either value).",
            show_default=False,
        ),
    ] = None,
    logy: Annotated[
        Optional[bool],
        typer.Option(
            "--logy/--linear",
            help="Log or linear y axis (default: log where the values span over two decades).",
            show_default=False,
        ),
    ] = None,
    title: Annotated[
        Optional[str], typer.Option(help="The figure's title, plain text ($ signs stay).", show_default=False)
    ] = None,
    mathtext: Annotated[
        bool, typer.Option("--mathtext", help="Read --title as matplotlib mathtext: $x^2$ is x squared.")
    ] = False,
    facet: Annotated[
        Optional[str],
        typer.Option(
            help="A setting: one panel per value ('none': one panel; default: a panel per value of a grid key where "
            "one axis would squash stable lines next to wild ones or hold over six, never a panel of one line; a row "
            "per config for running-stats). Panels of comparable values share a y axis.",
            show_default=False,
        ),
    ] = None,
    theory: Annotated[
        bool,
        typer.Option(
            "--theory/--no-theory",
            help="Draw each line's theory column dashed over it: theory_std on std plots (theory_<metric>).",
            show_default=False,
        ),
    ] = False,
):
    """Plot a metric against layer for runs and sweeps: one line per config, +-1 sd band.

    A diverged run ends with an x at its divergence layer. Lines from different sweeps or
    runs never merge: single runs are seeds of one line only when they differ by seed alone.
    Running-stats results plot running_mean and running_var against iteration, a colour per
    channel, with the formula's values dashed. A note names every line that lies on another
    (or on part of a longer one); --theory dashes each line's theory_std over it.

    Example: bncli plot results/sweeps/init_vs_norm --metric abs_max --where init=kaiming --out abs_max.svg
    """
    from bncli import api

    with _reading(paths[0] if len(paths) == 1 else "PATH"):
        path = api.plot_runs(
            paths, out, metric, where=where or [], logy=logy, title=title, facet=facet, theory=theory, mathtext=mathtext
        )
    _console().print(f"plot: {_plain(str(path))}", markup=False)


@app.command("runs", short_help="List the runs and sweeps under a results directory.")
def runs_cmd(
    out: Annotated[Path, typer.Argument(help="Results directory.")] = Path("results"),
    study: Annotated[Optional[str], typer.Option(help="Only this study's.", show_default=False)] = None,
    status: Annotated[
        Optional[str],
        typer.Option(
            help="Only runs with this status (ok, diverged, failed, interrupted, running, or damaged: files bncli "
            "cannot read); sweeps holding one.",
            show_default=False,
        ),
    ] = None,
    where: Annotated[
        Optional[list[str]],
        typer.Option(
            help="KEY=VALUE: only runs with this setting, defaults included, the value read as the field reads it "
            "(init_std=2 matches 2.0; repeatable: a key twice matches either value); a sweep whose grid or base has "
            "it. A key or value no study has is refused.",
            show_default=False,
        ),
    ] = None,
    format: FormatOpt = Format.table,
):
    """List the runs and sweeps under OUT, newest first: study, name, status, start, wall time,
    and the settings that differ from the study's defaults (a sweep's: its grid).

    Example: bncli runs results --study depth-study --where init=normal
    """
    from bncli import results

    if not out.is_dir():
        raise BncliError(f"OUT: {out} is not a directory (give a results directory, like results)")
    keep = results.filters(study=study, status=status, where=where or [])  # a typo refused before any reading
    every = results.list_runs(out)
    _print_listing([e for e in every if keep(e)], len(every), format)


def _print_listing(entries: list[dict[str, Any]], total: int, format: Format) -> None:
    """`bncli runs`' output: a table (on a narrow terminal, kind and study go first), csv or json."""
    from bncli import report, results

    console = _console()
    if format == Format.json:
        return _print_json(console, entries)
    # settings before the times: on a narrow terminal the last columns are the ones left out
    rows = [
        [
            e["kind"],
            e["study"] or "?",
            e["name"],
            e["status"],
            results.settings_text(e),
            e["started"] or "-",
            "-" if not isinstance(e["wall_seconds"], (int, float)) else f"{e['wall_seconds']:.2f}",
        ]
        for e in entries
    ]
    header = ["kind", "study", "name", "status", "settings", "started", "wall_s"]
    if format == Format.table:  # to the second, in the machine's zone as recorded; csv keeps ISO 8601
        for row in rows:
            row[5] = row[5][:19].replace("T", " ")
    if format == Format.csv:
        import csv

        writer = csv.writer(console.file, lineterminator="\n")
        writer.writerows([header, *rows])
        return
    # too narrow for every column: kind and study go first (the name says both), then the times;
    # name, status and settings stay, since they tell the runs apart
    table = report.table(header, justify="left", drop=["kind", "study", "wall_s", "started"], wrap=["settings"])
    for row in rows:
        table.add_row(*[_plain(c) for c in row])
    console.print(table)
    console.print(f"{len(entries)} of {total} listed")


@app.command("show", short_help="Re-render a saved run or sweep from its files.")
def show_cmd(
    path: Annotated[Path, typer.Argument(help="A run or sweep directory.", show_default=False)],
    every: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Show every K-th layer (depth study; default: all up to 100 layers, else about 50 rows).",
            show_default=False,
        ),
    ] = None,
    format: FormatOpt = Format.table,
):
    """Re-render a saved run's table and summary, or a sweep's summary, from its files alone.

    Example: bncli show results/sweeps/init_vs_norm
    """
    from bncli import api, report, results, studies

    console = _console()
    with _reading(path):
        shown = api.show(path)
        if isinstance(shown, list):  # a results directory: its listing, listed once
            return _print_listing(shown, len(shown), format)
        if isinstance(shown, results.SavedSweep):
            if format != Format.table:
                return _print_sweep_data(console, shown, format)
            _print_sweep(console, shown)
            return
        run = shown
        if format != Format.table:
            return _print_data(console, run.to_dict(), path / studies.get(run.study).CSV, format)
        parts = studies.get(run.study).render(run, every) if run.table is not None else []
        settings = results.settings_line(run)
    console.print(_plain(settings), markup=False, highlight=False)
    for part in parts:
        console.print(part)
    console.print(report.status_line(run.meta))


@app.command("compare", short_help="Saved runs of one study side by side: settings, one metric, where they part.")
def compare_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run directories of one study.", show_default=False, metavar="RUN")
    ],
    metric: Annotated[
        Optional[str],
        typer.Option(
            help="Column to compare (default: std; running_var for running-stats; var_error for convergence).",
            show_default=False,
        ),
    ] = None,
    rtol: Annotated[
        float, typer.Option(min=0, help="Relative tolerance: rows differ when |run k - run 1| > atol + rtol * |run 1|.")
    ] = 1e-6,
    atol: Annotated[float, typer.Option(min=0, help="Absolute floor of the tolerance.")] = 1e-12,
    every: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Show every K-th layer or iteration (default: all up to 100, else about 50; "
            "csv and json hold every row unless given).",
            show_default=False,
        ),
    ] = None,
    format: FormatOpt = Format.table,
):
    """Compare saved runs of one study: the settings that differ between them, then one metric
    side by side per layer (or iteration and channel), with each run's ratio to the first run
    (its difference instead when the values touch or cross zero), and the first row where the
    runs differ by more than the tolerance, or that they agree. Rows a run lacks (it diverged
    or stopped earlier) show as missing. A run against itself is identical.

    Example: bncli compare results/depth-study/kaiming results/depth-study/xavier --metric std
    """
    from bncli import api, comparison

    loaded = []
    for path in runs:
        with _reading(path):
            loaded.append(comparison.load(path))
    with _reading("RUN"):
        cmp = api.compare(*loaded, metric=metric, rtol=rtol, atol=atol)
    console = _console()
    if format == Format.json:
        _print_json(console, cmp.to_dict(every))
    elif format == Format.csv:
        console.file.write(cmp.frame(every).to_csv(index=False, na_rep="nan", lineterminator="\n"))
    else:
        for part in comparison.render(cmp, every):
            console.print(part)


def _print_sweep_data(console: Any, sweep: Any, fmt: Format) -> None:
    """--format csv: summary.csv as it is; json: the study, directory, grid keys, each config's
    summary numbers and summary.csv's rows (SavedSweep.to_dict)."""
    _print_data(console, sweep.to_dict(), sweep.dir / "summary.csv", fmt)


def _print_sweep(console: Any, sweep: Any) -> None:
    """The one rendering of a sweep: its summary table, one row per config, and the run counts."""
    from bncli import report, studies

    names = studies.get(sweep.study).SUMMARY
    console.print(report.sweep_table(sweep.configs(), sweep.keys, names, title=f"sweep {sweep.dir.name}"))
    console.print(report.sweep_counts(sweep.table))


def main():
    """The console script. Whatever happens to stdout after a run (a reader that went away, a
    full disk, an encoding without the table's characters) costs at most the printout: the
    results are already saved, and no traceback is printed."""
    import errno
    import os

    _closed_streams()
    for stream in (sys.stdout, sys.stderr):  # `±`, `…` and box lines on an ASCII stream: replaced
        reconfigure = getattr(stream, "reconfigure", None)  # io.TextIOWrapper's; a stream put in its place may lack it
        try:
            if reconfigure is not None:
                reconfigure(errors="replace")
        except ValueError:
            pass
    if len(sys.argv) == 1:  # bare `bncli`: the help, as for --help, not a usage error
        sys.argv.append("--help")
    try:
        try:
            app()
        finally:
            sys.stdout.flush()
    except BrokenPipeError:  # `bncli ... | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
    except (OSError, OutputError) as e:
        if e.errno not in (errno.ENOSPC, errno.EIO, errno.EBADF):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        text = e.strerror if isinstance(e, OSError) else str(e)
        _fail(f"cannot write the output: {text} (what the command saved is on disk)", 1)


class _Closed:
    """A standard stream the shell closed (`bncli ... >&-`), where Python leaves None: the command
    runs and saves as ever, and its first write fails as a write to a closed descriptor does
    (EBADF), which main reports in one line."""

    encoding, errors = "utf-8", "replace"

    def __init__(self, name: str, fd: int) -> None:
        self.name, self.fd = name, fd

    def write(self, text: str) -> int:
        import errno

        raise OSError(errno.EBADF, f"{self.name} is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd


def _closed_streams() -> None:
    """Stand-ins for a closed stdout or stderr, and /dev/null on their descriptors: else the next
    file opened (a result being written) would take descriptor 1 or 2, and whatever writes there
    (a library's C code, a subprocess) would write into it."""
    import os

    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is not None:
            continue
        null = os.open(os.devnull, os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, _Closed(name, fd) if name == "stdout" else open(fd, "w", closefd=False))
